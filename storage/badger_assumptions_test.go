package storage

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// The commit log (commitlog.go, wal.go) relies on how badger keeps its
// memtable logs, flushes its memtables and replays its logs. Each test
// here checks one of those facts against the badger in go.mod, with the
// store's own badger settings; when an upgrade breaks one, the failure
// names what in the commit log to re-check. Two facts cannot be seen from
// outside and are read from badger's code: that a table is synced (msync
// in table.CreateTable) and the manifest too (fsync in
// manifestFile.addChanges) before the memtable's log is removed, and that
// DB.Sync syncs the value log.

// assumptionOpts are the store's settings with memtables small enough
// for a test to fill several, and value log files (badger preallocates
// twice their size) small enough to copy.
var assumptionOpts = Options{MemTableSize: 8 << 20, ValueLogFileSize: 1 << 20}

// openBadger opens badger in dir as Open would with opts.
func openBadger(t *testing.T, dir string, opts Options) *badger.DB {
	t.Helper()
	db, err := badger.Open(opts.withDefaults().badgerOptions(dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() }) // a second Close does nothing
	return db
}

// marker is the unique start of value i of transaction seq.
func marker(seq uint64, i int) []byte { return fmt.Appendf(nil, "<txn %08d value %03d>", seq, i) }

// writeTxn commits transaction seq as the committer does (newTxn sets
// seqKey first) with n values of size bytes, each starting with its
// marker.
func writeTxn(t *testing.T, db *badger.DB, seq uint64, n, size int) {
	t.Helper()
	txn := (&Store{db: db}).newTxn(seq)
	defer txn.Discard()
	for i := range n {
		v := append(marker(seq, i), bytes.Repeat([]byte{'.'}, size)...)[:size]
		if err := txn.Set(Key("txn", Uint64(seq), fmt.Sprint(i)), v); err != nil {
			t.Fatal(err)
		}
	}
	if err := txn.Commit(); err != nil {
		t.Fatal(err)
	}
}

// holdsTxn tells whether db holds all (true) or none (false) of the n
// values of transaction seq; a part of them fails t.
func holdsTxn(t *testing.T, db *badger.DB, seq uint64, n int) bool {
	t.Helper()
	found := 0
	err := db.View(func(txn *badger.Txn) error {
		for i := range n {
			_, err := txn.Get(Key("txn", Uint64(seq), fmt.Sprint(i)))
			if err == nil {
				found++
			} else if !errors.Is(err, badger.ErrKeyNotFound) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found != 0 && found != n {
		t.Fatalf("badger holds %d of the %d writes of transaction %d: part of a transaction", found, n, seq)
	}
	return found == n
}

// readSeq returns the seqKey badger holds (0: none).
func readSeq(t *testing.T, db *badger.DB) uint64 {
	t.Helper()
	raw, err := (&Store{db: db}).Get(seqKey)
	if errors.Is(err, ErrNotFound) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return ParseUint64(raw)
}

// memLogsOf lists the numbers of the memtable logs in dir.
func memLogsOf(t *testing.T, dir string) []int {
	t.Helper()
	mems, err := memLogs(dir)
	if err != nil {
		t.Fatalf("%v: memLogs (wal.go) finds no memtable log in badger's directory; "+
			"re-check where and under what name badger keeps them (mtFilePath in memtable.go)", err)
	}
	return mems
}

// fileHolds tells whether the file at path contains b.
func fileHolds(t *testing.T, path string, b []byte) bool {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Contains(data, b)
}

// copyDir copies the files of src under dst, but those skip names.
func copyDir(t *testing.T, src, dst string, skip func(name string) bool) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || skip(d.Name()) {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dst, rel)), 0o700); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestBadgerNamesMemtableLogsInItsDirectory: badger keeps each memtable's
// log in the directory it was opened on, named by a five-digit number
// and ".mem"; an open database has at least one.
func TestBadgerNamesMemtableLogsInItsDirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db := openBadger(t, dir, assumptionOpts)
	for seq := uint64(1); seq <= 150; seq++ { // 15 MB: a second memtable
		writeTxn(t, db, seq, 100, 1000)
	}
	name := regexp.MustCompile(`^[0-9]{5,}\.mem$`)
	var logs []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !strings.HasSuffix(d.Name(), memExt) {
			return err
		}
		if filepath.Dir(path) != dir || !name.MatchString(d.Name()) {
			t.Errorf("badger keeps a memtable log at %s", path)
		}
		logs = append(logs, d.Name())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	mems := memLogsOf(t, dir)
	for _, n := range mems {
		if !slices.Contains(logs, fmt.Sprintf("%05d%s", n, memExt)) {
			t.Errorf("memtable log %d is not named %05d%s", n, n, memExt)
		}
	}
	if t.Failed() || len(logs) == 0 || len(logs) != len(mems) {
		t.Fatalf("badger no longer names its memtable logs NNNNN.mem in its own directory (found %v): "+
			"memLogs and syncBadger (wal.go) find them by that name, sealSegment retires commit log segments "+
			"by their numbers, and recovery syncs each of them before it retires the old segments; "+
			"re-check mtFilePath and openMemTables (badger's memtable.go), then memExt and syncBadger's %%05d", logs)
	}
}

// TestBadgerNumbersMemtableLogsUpward: each new memtable's log has a
// number greater than every earlier one, and an open database always has
// at least one memtable log.
func TestBadgerNumbersMemtableLogsUpward(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db := openBadger(t, dir, assumptionOpts)
	newest := memLogsOf(t, dir)[0]
	for seq := uint64(1); seq <= 300; seq++ { // 30 MB: about four memtables
		writeTxn(t, db, seq, 100, 1000)
		mems := memLogsOf(t, dir)
		if n := mems[len(mems)-1]; n < newest {
			t.Fatalf("after memtable log %d badger started log %d (logs %v): badger no longer numbers its "+
				"memtable logs upward. sealSegment (wal.go) takes the highest number as the newest memtable, "+
				"which may hold the segment's transactions, and retires the segment once every log up to it "+
				"is gone; re-check newMemTable and nextMemFid (badger's memtable.go)", newest, n, mems)
		} else {
			newest = n
		}
	}
	if newest < 3 {
		t.Fatalf("30 MB in memtables of 8 MiB reached memtable log %d only", newest)
	}
}

// TestBadgerWritesATransactionToTheNewestMemtableLog: when Commit
// returns, the transaction's writes are in the highest-numbered memtable
// log.
func TestBadgerWritesATransactionToTheNewestMemtableLog(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db := openBadger(t, dir, assumptionOpts)
	checked := map[int]bool{}
	for seq := uint64(1); seq <= 300; seq++ { // 30 MB: about four memtables
		writeTxn(t, db, seq, 100, 1000)
		mems := memLogsOf(t, dir)
		newest := mems[len(mems)-1]
		if checked[newest] && seq%50 != 0 {
			continue
		}
		checked[newest] = true
		path := filepath.Join(dir, fmt.Sprintf("%05d%s", newest, memExt))
		if !fileHolds(t, path, marker(seq, 99)) {
			t.Fatalf("transaction %d is not in the newest memtable log %s (logs %v) when Commit returns: "+
				"sealSegment (wal.go) takes the newest memtable log at a seal as the last one that may hold "+
				"the segment's transactions; if badger writes elsewhere or later, a segment may be retired "+
				"while its transactions are in no synced file. Re-check DB.writeRequests and "+
				"ensureRoomForWrite (badger's db.go) and memTable.Put (memtable.go)", seq, path, mems)
		}
	}
	if len(checked) < 3 {
		t.Fatalf("30 MB in memtables of 8 MiB used memtable logs %v only", checked)
	}
}

// TestBadgerFlushesMemtablesOldestFirst: badger flushes memtables and
// removes their logs oldest first, so the logs present are always a run
// of consecutive numbers.
func TestBadgerFlushesMemtablesOldestFirst(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db := openBadger(t, dir, assumptionOpts)
	oldest := 0
	for seq := uint64(1); seq <= 300; seq++ { // 30 MB: about four memtables
		writeTxn(t, db, seq, 100, 1000)
		mems := memLogsOf(t, dir)
		if mems[0] < oldest || mems[len(mems)-1]-mems[0] != len(mems)-1 {
			t.Fatalf("memtable logs %v, the oldest before them %d: badger no longer flushes memtables "+
				"and removes their logs oldest first. sealSegment (wal.go) retires a segment only once the "+
				"oldest log present is newer than the newest at its seal, so a memtable left behind keeps "+
				"every later segment (TestLogDropsFlushedSegments bounds them by this order); re-check "+
				"flushMemtable and db.imm (badger's db.go)", mems, oldest)
		}
		oldest = mems[0]
	}
	if oldest < 2 {
		t.Fatalf("30 MB in memtables of 8 MiB: no memtable log removed (oldest %d)", oldest)
	}
}

// TestBadgerRemovesAMemtableLogOnlyOnceItsTableHoldsIt: once a memtable's
// log is gone, badger's tables and manifest hold every transaction that
// was in it: a copy of the directory without any memtable or value log
// reads them back, and seqKey names the last of them or a later one.
func TestBadgerRemovesAMemtableLogOnlyOnceItsTableHoldsIt(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db := openBadger(t, dir, assumptionOpts)
	first := memLogsOf(t, dir)[0]
	var last uint64 // the last transaction in log first
	for seq := uint64(1); ; seq++ {
		writeTxn(t, db, seq, 100, 1000)
		if mems := memLogsOf(t, dir); mems[len(mems)-1] != first {
			break // transaction seq went to the next memtable; writes stop, so no other flush runs
		}
		last = seq
		if seq > 1000 {
			t.Fatal("100 MB in memtables of 8 MiB and no second memtable log")
		}
	}
	for start := time.Now(); memLogsOf(t, dir)[0] <= first; time.Sleep(time.Millisecond) {
		if time.Since(start) > time.Minute {
			t.Fatalf("memtable log %d still there a minute after its memtable filled", first)
		}
	}
	lost := t.TempDir()
	copyDir(t, dir, lost, func(name string) bool {
		return strings.HasSuffix(name, memExt) || strings.HasSuffix(name, ".vlog")
	})
	r := openBadger(t, lost, assumptionOpts)
	missing := []uint64{}
	for seq := uint64(1); seq <= last; seq++ {
		if !holdsTxn(t, r, seq, 100) {
			missing = append(missing, seq)
		}
	}
	if got := readSeq(t, r); len(missing) > 0 || got < last {
		t.Fatalf("memtable log %d is gone but badger's tables lack transactions %v of 1..%d (seqKey %d): "+
			"badger no longer removes a memtable's log only after its table and the manifest hold it. "+
			"sealSegment (wal.go) retires a commit log segment as soon as the memtable logs that may hold "+
			"its transactions are gone; re-check handleMemTableFlush and flushMemtable (badger's db.go): "+
			"table.CreateTable must msync the table and levelsController.addLevel0Table fsync the manifest "+
			"before the memtable's last reference goes and its log is deleted (skiplist OnClose)",
			first, missing, last, got)
	}
}

// TestBadgerReplaysWholeTransactions: on open, badger replays its
// memtable logs up to the last whole transaction: a transaction torn at
// the end of the log is dropped entirely, seqKey included, and the one
// before it is kept.
func TestBadgerReplaysWholeTransactions(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db := openBadger(t, dir, assumptionOpts)
	const n = 5
	for seq := uint64(1); seq <= n; seq++ {
		writeTxn(t, db, seq, 10, 200)
	}
	mems := memLogsOf(t, dir)
	if len(mems) != 1 {
		t.Fatalf("10 KB in memtables of 8 MiB: memtable logs %v", mems)
	}
	// A crash with the log whole, and one in the middle of its last
	// transaction: the log is cut inside the last of its values written.
	whole, torn := t.TempDir(), t.TempDir()
	none := func(string) bool { return false }
	copyDir(t, dir, whole, none)
	copyDir(t, dir, torn, none)
	path := filepath.Join(torn, fmt.Sprintf("%05d%s", mems[0], memExt))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cut := -1
	for i := range 10 {
		if at := bytes.Index(data, marker(n, i)); at > cut {
			cut = at
		}
	}
	if cut < 0 {
		t.Fatalf("transaction %d is not in memtable log %s", n, path)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 64<<10), int64(cut+len(marker(n, 0)))); err != nil {
		t.Fatal(err)
	}
	f.Close()

	for _, c := range []struct {
		dir  string
		last uint64
	}{{whole, n}, {torn, n - 1}} {
		r := openBadger(t, c.dir, assumptionOpts)
		seq := readSeq(t, r)
		holdsLast, holdsNext := holdsTxn(t, r, c.last, 10), holdsTxn(t, r, c.last+1, 10)
		if seq != c.last || !holdsLast || holdsNext {
			t.Fatalf("after replaying a memtable log whose last whole transaction is %d: seqKey %d, "+
				"transaction %d there %v, transaction %d there %v. recoverLog (commitlog.go) reads seqKey "+
				"after Open as the last transaction badger holds, whole, and applies the commit log's "+
				"records after it; re-check logFile.iterate (badger's memtable.go) and its transaction "+
				"markers (bitTxn, bitFinTxn)", c.last, seq, c.last, holdsLast, c.last+1, holdsNext)
		}
	}
}

// TestBadgerKeepsValuesBelowTheThresholdInTheMemtableLog: a value shorter
// than the ValueThreshold the store's options give badger is written to
// the memtable log; one of the threshold or longer goes to the value
// log.
func TestBadgerKeepsValuesBelowTheThresholdInTheMemtableLog(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	opts := Options{MemTableSize: 8 << 20, ValueLogFileSize: 4 << 20} // value log files of 8 MiB to read
	bo := opts.withDefaults().badgerOptions(dir)
	if bo.VLogPercentile != 0 || bo.ValueThreshold != 1<<20 {
		t.Fatalf("badger's value threshold is %d with VLogPercentile %v, want a fixed 1 MiB: the store reads "+
			"it once at Open (valueLimit) to know when a round must sync the value log, and minMemTableSize "+
			"(options.go) is derived from 1 MiB; re-check Options.ValueThreshold and VLogPercentile in badger",
			bo.ValueThreshold, bo.VLogPercentile)
	}
	db := openBadger(t, dir, opts)
	vt := int(bo.ValueThreshold)
	for _, c := range []struct {
		seq  uint64
		size int
		vlog bool
	}{{1, vt - 1, false}, {2, vt, true}} {
		writeTxn(t, db, c.seq, 1, c.size)
		mems := memLogsOf(t, dir)
		inMem := fileHolds(t, filepath.Join(dir, fmt.Sprintf("%05d%s", mems[len(mems)-1], memExt)), marker(c.seq, 0))
		vlogs, _ := filepath.Glob(filepath.Join(dir, "*.vlog"))
		inVlog := false
		for _, v := range vlogs {
			inVlog = inVlog || fileHolds(t, v, marker(c.seq, 0))
		}
		if inVlog != c.vlog || inMem == c.vlog {
			t.Fatalf("a value of %d bytes (threshold %d): in the memtable log %v, in the value log %v. "+
				"Store.apply (commit.go) marks a round that wrote a value of at least the threshold, and "+
				"sync (wal.go) then syncs badger's value log too: a value badger put in the value log "+
				"unmarked would be in no synced file. Re-check skipVlogAndSetThreshold and valueLog.write "+
				"(badger's structs.go, value.go)", c.size, vt, inMem, inVlog)
		}
	}
}

// TestBadgerLeavesItsSubdirectoriesAlone: badger neither fails on nor
// touches a directory inside its own, where the commit log lives.
func TestBadgerLeavesItsSubdirectoriesAlone(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	logdir := filepath.Join(dir, logDir)
	if err := os.MkdirAll(logdir, 0o700); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		filepath.Base(segmentPath(logdir, 1)): []byte("segment"),
		filepath.Base(sparePath(logdir, 2)):   []byte("spare"),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(logdir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		db := openBadger(t, dir, assumptionOpts)
		for seq := uint64(1); seq <= 100; seq++ { // 10 MB: a memtable flushed
			writeTxn(t, db, seq, 100, 1000)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range files {
		if got, err := os.ReadFile(filepath.Join(logdir, name)); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s/%s after badger ran: %q, %v; want %q. The commit log keeps its segments in %s "+
				"inside badger's directory (logDir, commitlog.go); re-check what badger's Open and its "+
				"flushes and compactions do with unknown entries of its directory", logDir, name, got, err, data, logDir)
		}
	}
}

// TestBadgerNeedsMinMemTableSize: badger takes a memtable of
// minMemTableSize bytes and refuses one byte less.
func TestBadgerNeedsMinMemTableSize(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		size int64
		ok   bool
	}{{minMemTableSize, true}, {minMemTableSize - 1, false}} {
		bo := Options{InMemory: true}.withDefaults().badgerOptions("").WithMemTableSize(c.size)
		db, err := badger.Open(bo)
		if err == nil {
			db.Close()
		}
		if (err == nil) != c.ok {
			t.Fatalf("badger with a memtable of %d bytes: %v. validate (options.go) refuses a MemTableSize "+
				"below minMemTableSize (%d), derived from badger's rule that 15%% of a memtable holds a value "+
				"of the value threshold; re-check checkAndSetOptions (badger's db.go)", c.size, err, minMemTableSize)
		}
	}
}

// TestBadgerTxnTooBig: the first write of a transaction (seqKey) always
// fits, and a transaction that can take no more says so with
// ErrTxnTooBig.
func TestBadgerTxnTooBig(t *testing.T) {
	t.Parallel()
	db := openBadger(t, "", Options{InMemory: true, MemTableSize: minMemTableSize})
	txn := db.NewTransaction(true)
	defer txn.Discard()
	if err := txn.Set(seqKey, []byte(Uint64(1))); err != nil {
		t.Fatalf("the first write of a transaction, seqKey: %v. newTxn (commitlog.go) ignores its error, "+
			"taking the first write of a transaction to fit; re-check Txn.modify and checkSize (badger's txn.go)", err)
	}
	value := make([]byte, 1000)
	var err error
	for i := 0; err == nil && i < 10_000; i++ {
		err = txn.Set(Key("k", fmt.Sprint(i)), value)
	}
	if !errors.Is(err, badger.ErrTxnTooBig) {
		t.Fatalf("a transaction of 10 MB in memtables of %d bytes: %v, want ErrTxnTooBig. writeSome "+
			"(commit.go) ends a transaction and starts the next at that error, and a batch that fits no "+
			"transaction fails alone; re-check Txn.modify and checkSize (badger's txn.go)", minMemTableSize, err)
	}
}
