package storage

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestEveryTunableHasADefault: withDefaults gives every numeric field of
// Options a value, the defaults pass validate, and a field set by the
// caller is kept.
func TestEveryTunableHasADefault(t *testing.T) {
	t.Parallel()
	def := Options{}.withDefaults()
	if err := def.validate(); err != nil {
		t.Fatalf("the defaults do not validate: %v", err)
	}
	v := reflect.ValueOf(def)
	for i := range v.NumField() {
		f, name := v.Field(i), v.Type().Field(i).Name
		switch f.Kind() {
		case reflect.Int, reflect.Int64, reflect.Float64:
		default:
			continue
		}
		if f.IsZero() {
			t.Errorf("Options.%s has no default in withDefaults", name)
			continue
		}
		var set Options
		field := reflect.ValueOf(&set).Elem().Field(i)
		if f.Kind() == reflect.Float64 {
			field.SetFloat(f.Float() / 2)
		} else {
			field.SetInt(f.Int() * 2)
		}
		if got := reflect.ValueOf(set.withDefaults()).Field(i); !got.Equal(field) {
			t.Errorf("Options.%s set to %v becomes %v", name, field, got)
		}
	}
}

// TestOpenNamesBadOptions: Open refuses options the store cannot run
// with, and its error names each field at fault.
func TestOpenNamesBadOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		opts   Options
		fields []string
	}{
		{"negative duration", Options{UrgentCalm: -time.Millisecond}, []string{"UrgentCalm"}},
		{"negative sizes", Options{SegmentBytes: -1, SpareSegments: -1, QueueBatches: -1},
			[]string{"SegmentBytes", "SpareSegments", "QueueBatches"}},
		{"transaction larger than a round", Options{TxnOps: 500, MaxOpsPerRound: 400}, []string{"TxnOps"}},
		{"memtable too small for badger", Options{MemTableSize: minMemTableSize - 1}, []string{"MemTableSize"}},
		{"stall below compaction", Options{NumLevelZeroTables: 10, NumLevelZeroTablesStall: 10}, []string{"NumLevelZeroTablesStall"}},
		{"value log file too small", Options{ValueLogFileSize: 1 << 19}, []string{"ValueLogFileSize"}},
		{"discard ratio of one", Options{ValueLogGCDiscardRatio: 1}, []string{"ValueLogGCDiscardRatio"}},
		{"in memory too", Options{InMemory: true, BusyGap: -1}, []string{"BusyGap"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := ""
			if !tc.opts.InMemory {
				dir = t.TempDir()
			}
			s, err := Open(dir, tc.opts)
			if err == nil {
				s.Close()
				t.Fatalf("Open accepted %+v", tc.opts)
			}
			for _, f := range tc.fields {
				if !strings.Contains(err.Error(), "option "+f+" ") {
					t.Errorf("the error does not name %s: %v", f, err)
				}
			}
			if n := strings.Count(err.Error(), "option "); n != len(tc.fields) {
				t.Errorf("the error names %d fields, want %d: %v", n, len(tc.fields), err)
			}
		})
	}
}

// TestOpenHonoursItsOptions: the store runs with the options it was
// opened with, defaults filled in, not with shared settings.
func TestOpenHonoursItsOptions(t *testing.T) {
	t.Parallel()
	opts := Options{SegmentBytes: 1 << 20, MaxOpsPerRound: 512, TxnOps: 64}
	s, err := Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	want := opts.withDefaults()
	if !reflect.DeepEqual(s.opts, want) {
		s.Close()
		t.Fatalf("store options %+v, want %+v", s.opts, want)
	}
	if s.log.maxSpares != want.SpareSegments || cap(s.commits) != want.QueueBatches || cap(s.urgent) != want.UrgentQueueBatches {
		s.Close()
		t.Fatalf("commit log keeps %d spares, lanes hold %d and %d batches; want %d, %d, %d",
			s.log.maxSpares, cap(s.commits), cap(s.urgent), want.SpareSegments, want.QueueBatches, want.UrgentQueueBatches)
	}
	commitKilobytes(t, s, 30) // 3 MB: segments of 1 MiB fill and are sealed
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s.log.n < 3 {
		t.Fatalf("after 3 MB the commit log is at segment %d, want segments of 1 MiB", s.log.n)
	}
}
