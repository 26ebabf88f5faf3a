package media

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"persona/storage"
)

// openStorage opens a store in a fresh directory, closed when the test ends.
func openStorage(t *testing.T) *storage.Store {
	t.Helper()
	st, err := storage.Open(t.TempDir(), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// newTestStore opens a media store with o in its own storage.
func newTestStore(t *testing.T, o Options) *Store {
	t.Helper()
	if o.MaxUploadBytes == 0 {
		o.MaxUploadBytes = 1 << 20
	}
	s, err := New(openStorage(t), o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestEveryTunableHasADefault: withDefaults gives every numeric field but
// MaxUploadBytes (configured) a value, the defaults pass validate, and a
// field set by the caller is kept.
func TestEveryTunableHasADefault(t *testing.T) {
	t.Parallel()
	def := Options{MaxUploadBytes: 1}.withDefaults()
	if err := def.validate(); err != nil {
		t.Fatalf("the defaults do not validate: %v", err)
	}
	if def.Log == nil {
		t.Error("no default logger")
	}
	v := reflect.ValueOf(def)
	for i := range v.NumField() {
		f, name := v.Field(i), v.Type().Field(i).Name
		if f.Kind() != reflect.Int && f.Kind() != reflect.Int64 {
			continue
		}
		if f.IsZero() {
			t.Errorf("Options.%s has no default in withDefaults", name)
			continue
		}
		var set Options
		field := reflect.ValueOf(&set).Elem().Field(i)
		field.SetInt(f.Int() * 2)
		if got := reflect.ValueOf(set.withDefaults()).Field(i); !got.Equal(field) {
			t.Errorf("Options.%s set to %v becomes %v", name, field, got)
		}
	}
}

// TestNewNamesBadOptions: New refuses options the store cannot run with,
// and its error names each field at fault.
func TestNewNamesBadOptions(t *testing.T) {
	t.Parallel()
	st := openStorage(t)
	for _, tc := range []struct {
		name   string
		opts   Options
		fields []string
	}{
		{"no upload limit", Options{}, []string{"MaxUploadBytes"}},
		{"negative upload limit", Options{MaxUploadBytes: -1}, []string{"MaxUploadBytes"}},
		{"negative durations", Options{MaxUploadBytes: 1, PendingTTL: -time.Hour, MaxWait: -1, PollInterval: -time.Millisecond},
			[]string{"PendingTTL", "MaxWait", "PollInterval"}},
		{"negative thumbnail limits", Options{MaxUploadBytes: 1, ThumbnailSlots: -1, MaxThumbnailPixels: -1},
			[]string{"ThumbnailSlots", "MaxThumbnailPixels"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := New(st, tc.opts)
			if err == nil {
				t.Fatalf("New accepted %+v: %+v", tc.opts, s.Options())
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

// TestNewHonoursItsOptions: a store runs with the options it was built
// with, defaults filled in for the rest.
func TestNewHonoursItsOptions(t *testing.T) {
	t.Parallel()
	s := newTestStore(t, Options{MaxUploadBytes: 5, ThumbnailSlots: 3, MaxWait: time.Second})
	o, d := s.Options(), DefaultOptions()
	if o.MaxUploadBytes != 5 || o.ThumbnailSlots != 3 || o.MaxWait != time.Second {
		t.Errorf("options set: %+v", o)
	}
	if o.PendingTTL != d.PendingTTL || o.PollInterval != d.PollInterval || o.MaxThumbnailPixels != d.MaxThumbnailPixels {
		t.Errorf("options left to their defaults: %+v, defaults %+v", o, d)
	}
	if cap(s.slots) != 3 {
		t.Errorf("%d thumbnail slots, want 3", cap(s.slots))
	}
}
