package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLogDropsFlushedSegments: the commit log is cut into segments, and a
// segment goes once badger has flushed to tables the memtables that held
// its transactions; everything reads back after a reopen.
func TestLogDropsFlushedSegments(t *testing.T) {
	t.Parallel()
	opts := Options{MemTableSize: 8 << 20, SegmentBytes: 1 << 20} // memtables of 8 segments
	dir := t.TempDir()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	// Badger flushes on its own goroutines, later on a loaded machine:
	// write in steps of 1 MB until ten segments went, up to 120 MB.
	n := 0
	for n < 1200 && s.Stats().Dropped < 10 {
		commitBatches(t, s, n, n+10)
		n += 10
	}
	if d := s.Stats().Dropped; d < 10 {
		s.Close()
		t.Fatalf("%d segments dropped of %d MB in segments of 1 MB", d, n/10)
	}
	ns, _ := segments(filepath.Join(dir, logDir))
	mems, _ := memLogs(dir)
	perMemtable := int(opts.MemTableSize / opts.SegmentBytes)
	if len(ns) > (len(mems)+1)*perMemtable+1 { // what the memtables in memory hold, and the open segment
		s.Close()
		t.Fatalf("%d segments kept beside %d memtables: %v", len(ns), len(mems), ns)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	readKilobytes(t, s, n)
	if ns, _ := segments(filepath.Join(dir, logDir)); len(ns) != 1 {
		t.Fatalf("segments after a clean reopen: %v, want one new", ns)
	}
}

// TestRecycledSegmentsRecover: segments done with are written over, and a
// segment written over holds the old records after its new ones. A store
// that loses badger's unsynced logs still reads every acknowledged write
// back: recovery applies the new records and passes over the old, whose
// transactions badger holds.
func TestRecycledSegmentsRecover(t *testing.T) {
	t.Parallel()
	opts := Options{MemTableSize: 8 << 20, SegmentBytes: 1 << 20}
	dir := t.TempDir()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	// Until ten segments went (badger flushes on its own goroutines), then
	// 2 MB more: segments sealed after one went are written over it.
	n := 0
	for n < 1200 && s.Stats().Dropped < 10 {
		commitBatches(t, s, n, n+10)
		n += 10
	}
	commitBatches(t, s, n, n+20)
	n += 20
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s.log.reused == 0 { // how many depends on when badger flushes
		t.Fatalf("%d segments written over a spare of %d done with", s.log.reused, s.Stats().Dropped)
	}
	spares, _ := numbered(filepath.Join(dir, logDir), ".spare")
	if len(spares) > s.opts.SpareSegments {
		t.Fatalf("%d spares kept: %v", len(spares), spares)
	}
	// Lose badger's memtable logs, as a power loss may.
	mems, _ := filepath.Glob(filepath.Join(dir, "*"+memExt))
	for _, m := range mems {
		if err := os.Remove(m); err != nil {
			t.Fatal(err)
		}
	}
	r, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	readKilobytes(t, r, n)
}

// TestRecoveryPassesOverOldRecords: a segment written over a spare holds,
// after its new records, records of transactions badger already holds;
// recovery must not apply them again over newer values.
func TestRecoveryPassesOverOldRecords(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("p", 1000)
	for _, v := range []string{"old1", "old2"} {
		var b Batch
		b.Set(Key("x"), []byte(v+pad))
		if err := s.CommitSync(&b); err != nil {
			t.Fatal(err)
		}
	}
	last, n := s.seq, s.log.n
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Badger lost the newest transaction, last+1, which was written over
	// the segment from its start: the segment now reads last+1, then the
	// old record of last.
	f, err := os.OpenFile(segmentPath(filepath.Join(dir, logDir), n), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	l := &commitLog{dir: filepath.Join(dir, logDir), f: f, n: n}
	l.add(last+1, []*pending{{b: &Batch{ops: []op{{key: Key("x"), value: []byte("new1" + pad)}}}}})
	if err := l.flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, err := s.Get(Key("x")); err != nil || string(v) != "new1"+pad {
		t.Fatalf("x = %.8q..., %v; want new1...", v, err)
	}
}

// TestRecoveryAppliesWhatBadgerLacks: on open, the commit log's records
// after the last transaction badger holds are applied in order; older
// records, records after a gap, and a torn record at the end are not.
func TestRecoveryAppliesWhatBadgerLacks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var b Batch
	b.Set(Key("a"), []byte("1"))
	b.Set(Key("gone"), []byte("1"))
	if err := s.CommitSync(&b); err != nil {
		t.Fatal(err)
	}
	last := s.seq
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// What a crash leaves when badger's own log lost its last transactions.
	logdir := filepath.Join(dir, logDir)
	ns, err := segments(logdir)
	if err != nil || len(ns) == 0 {
		t.Fatalf("segments %v, %v", ns, err)
	}
	f, err := os.OpenFile(segmentPath(logdir, ns[len(ns)-1]), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	l := &commitLog{dir: logdir, f: f, n: ns[len(ns)-1], size: fi.Size()}
	record := func(seq uint64, ops ...op) { l.add(seq, []*pending{{b: &Batch{ops: ops}}}) }
	record(last, op{key: Key("old"), value: []byte("x")}) // badger holds it already
	record(last+1, op{key: Key("a"), value: []byte("2")}, op{key: Key("b"), value: []byte("2")})
	record(last+2, op{key: Key("gone"), del: true})
	if err := l.flush(); err != nil {
		t.Fatal(err)
	}
	record(last+3, op{key: Key("torn"), value: []byte("x")})
	if _, err := f.WriteAt(l.buf[:len(l.buf)-3], l.size); err != nil {
		t.Fatal(err)
	}
	l.buf = l.buf[:0]
	if err := l.next(); err != nil { // the next segment starts after a gap
		t.Fatal(err)
	}
	record(last+4, op{key: Key("after a gap"), value: []byte("x")})
	if err := l.flush(); err != nil {
		t.Fatal(err)
	}
	l.f.Close()

	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for key, want := range map[string]string{"a": "2", "b": "2", "gone": "", "old": "", "after a gap": "", "torn": ""} {
		v, err := s.Get(Key(key))
		if want == "" {
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("%s = %q, %v; want none", key, v, err)
			}
		} else if string(v) != want {
			t.Errorf("%s = %q, %v; want %q", key, v, err, want)
		}
	}
	if s.seq != last+2 {
		t.Errorf("after recovery the last transaction is %d, want %d", s.seq, last+2)
	}
	if ns, _ := segments(logdir); len(ns) != 1 {
		t.Errorf("segments after recovery: %v, want one new", ns)
	}
	var c Batch
	c.Set(Key("c"), []byte("3"))
	if err := s.CommitSync(&c); err != nil {
		t.Fatal(err)
	}
	if s.seq != last+3 {
		t.Errorf("the next transaction is %d, want %d", s.seq, last+3)
	}
}

// TestAcknowledgedWritesSurviveLosingBadgersLog: the worst a power loss
// can do to badger's unsynced memtable log (and its value log, empty here)
// is lose all of it. A copy of a live store without those logs still reads
// every acknowledged write back: recovery applies them from the commit
// log.
func TestAcknowledgedWritesSurviveLosingBadgersLog(t *testing.T) {
	t.Parallel()
	testAcknowledgedWritesSurviveLosingBadgersLog(t, openPlain)
}

func testAcknowledgedWritesSurviveLosingBadgersLog(t *testing.T, opn opener) {
	live := t.TempDir()
	s, err := opn(t, live, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	commitKilobytes(t, s, 20) // 2 MB: within the first memtable, so no table is being written
	lost := t.TempDir()
	copied := 0
	err = filepath.WalkDir(live, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, memExt) || strings.HasSuffix(path, ".vlog") {
			return err // badger's unsynced logs: lost
		}
		rel, _ := filepath.Rel(live, path)
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(lost, rel)), 0o700); err != nil {
			return err
		}
		copied++
		return os.WriteFile(filepath.Join(lost, rel), data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := opn(t, lost, Options{})
	if err != nil {
		t.Fatalf("open a copy without badger's memtable and value logs (%d files copied): %v. A power loss "+
			"may lose those unsynced logs whole, and recovery (recoverLog, commitlog.go) needs badger to open "+
			"without them; re-check badger's openMemTables (memtable.go) and valueLog.open (value.go)", copied, err)
	}
	defer r.Close()
	readKilobytes(t, r, 20)
}

// TestLogStartsAnewAfterAFailedWrite: a round whose log write fails
// reports the error; the next round first syncs badger and starts a new
// segment, and the store goes on.
func TestLogStartsAnewAfterAFailedWrite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir)
	commit := func(key string) error {
		var b Batch
		b.Set(Key(key), []byte("v"))
		return s.CommitSync(&b)
	}
	if err := commit("before"); err != nil {
		t.Fatal(err)
	}
	if err := s.Health(); err != nil {
		t.Fatalf("health after a good round: %v", err)
	}
	failed := s.log.n
	s.log.f.Close() // the committer is idle: its next write fails
	if err := commit("failed"); err == nil {
		t.Fatal("a round whose log write failed reported success")
	}
	if err := s.Health(); err == nil || !errors.Is(err, os.ErrClosed) {
		t.Fatalf("health after a failed round: %v, want the round's error", err)
	}
	if err := commit("after"); err != nil {
		t.Fatalf("the round after a failed one: %v", err)
	}
	if err := s.Health(); err != nil {
		t.Fatalf("health after the store went on: %v", err)
	}
	if ns, _ := segments(filepath.Join(dir, logDir)); len(ns) != 1 || ns[0] <= failed {
		t.Fatalf("segments %v after starting anew from %d", ns, failed)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir)
	defer s.Close()
	for _, key := range []string{"before", "after"} {
		if _, err := s.Get(Key(key)); err != nil {
			t.Fatalf("%s after reopen: %v", key, err)
		}
	}
}

// commitKilobytes commits n batches of 100 keys of 1,000 bytes each, one
// after another, each acknowledged.
func commitKilobytes(t *testing.T, s *Store, n int) {
	t.Helper()
	commitBatches(t, s, 0, n)
}

// commitBatches commits batches from to to of commitKilobytes.
func commitBatches(t *testing.T, s *Store, from, to int) {
	t.Helper()
	value := make([]byte, 1000)
	for i := from; i < to; i++ {
		var b Batch
		for j := range 100 {
			b.Set(Key("k", fmt.Sprint(i), fmt.Sprint(j)), value)
		}
		if err := s.CommitSync(&b); err != nil {
			t.Fatal(err)
		}
	}
}

// readKilobytes checks that s holds every key commitKilobytes(n) wrote.
func readKilobytes(t *testing.T, s *Store, n int) {
	t.Helper()
	for i := range n {
		for j := range 100 {
			if v, err := s.Get(Key("k", fmt.Sprint(i), fmt.Sprint(j))); err != nil || len(v) != 1000 {
				t.Fatalf("batch %d, key %d: %d bytes, %v", i, j, len(v), err)
			}
		}
	}
}
