package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// memExt names badger's memtable log files: a sequence number and ".mem".
const memExt = ".mem"

// sync makes every write before it durable: it writes and syncs the commit
// log's queued records (in memory there is nothing to sync). A round that
// wrote a value large enough for badger's value log syncs badger too: a
// table flushed later would point into a value log that was never synced.
// After a failed write the segment may end in a torn record that would
// hide the records after it from recovery, so the next sync first syncs
// badger and starts the log anew.
func (s *Store) sync() error {
	if s.log == nil {
		return s.db.Sync() // in memory: nothing to do
	}
	if s.logBroken {
		if err := s.restartLog(); err != nil {
			return err
		}
		s.logBroken = false
	}
	if err := s.log.flush(); err != nil {
		s.logBroken = true
		return err
	}
	if s.bigValue {
		if err := s.db.Sync(); err != nil {
			return err
		}
		s.bigValue = false
	}
	return nil
}

// sealFull seals the segment once it is full, after the round that filled
// it has been reported: its renames, directory sync and deletions then
// delay no write that was waiting for the round. Sealed segments whose
// transactions badger has flushed to tables become spares or are deleted.
func (s *Store) sealFull() {
	if s.log == nil || s.logBroken || s.log.size < s.opts.SegmentBytes {
		return
	}
	if err := s.sealSegment(); err != nil {
		s.logBroken = true // the rounds are durable; the next one starts anew
	}
}

// sealSegment starts the next segment. The sealed one may go once every
// memtable that existed when it was sealed has been flushed to a table
// and its log removed: badger syncs a table and its manifest before it
// removes the memtable's log, so badger's own files then hold every
// transaction of the segment. Until then badger's memtable logs are never
// synced: the kernel drops their pages with the file.
func (s *Store) sealSegment() error {
	mems, err := memLogs(s.dir)
	if err != nil {
		return err
	}
	s.sealed = append(s.sealed, sealedSegment{n: s.log.n, mem: mems[len(mems)-1]})
	if err := s.log.next(); err != nil {
		return err
	}
	var keep []sealedSegment
	for _, seg := range s.sealed {
		if seg.mem >= mems[0] { // a memtable it may need is still in memory
			keep = append(keep, seg)
			continue
		}
		if err := s.log.retire(seg.n); err != nil {
			return err
		}
		s.statsMu.Lock()
		s.stats.Dropped++
		s.statsMu.Unlock()
	}
	s.sealed = keep
	return nil
}

// sealedSegment is a full segment and the newest memtable log when it was
// sealed.
type sealedSegment struct{ n, mem int }

// restartLog makes everything badger holds durable in its own files, then
// starts a new segment and deletes every earlier one.
func (s *Store) restartLog() error {
	s.log.f.Close() // a failed segment: its errors no longer matter
	if err := s.syncBadger(); err != nil {
		return err
	}
	if err := s.log.open(s.log.n + 1); err != nil {
		return err
	}
	ns, err := segments(s.log.dir)
	if err != nil {
		return err
	}
	s.sealed = nil
	return removeSegments(s.log.dir, slices.DeleteFunc(ns, func(n int) bool { return n == s.log.n }))
}

// memLogs lists the numbers of badger's memtable logs, in order; there is
// always one.
func memLogs(dir string) ([]int, error) {
	fids, err := numbered(dir, memExt)
	if err == nil && len(fids) == 0 {
		err = errors.New("no memtable log in the data directory")
	}
	return fids, err
}

// syncFile fsyncs path (a file or a directory); a file already gone
// (flushed to a table and removed) is durable and no error.
func syncFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// syncBadger makes every write badger has taken durable in its own files:
// each memtable log, then DB.Sync for the value log (and the current
// memtable's log again, clean by then).
func (s *Store) syncBadger() error {
	mems, err := memLogs(s.dir)
	if err != nil {
		return err
	}
	for _, fid := range mems {
		if err := syncFile(filepath.Join(s.dir, fmt.Sprintf("%05d%s", fid, memExt))); err != nil {
			return err
		}
	}
	return s.db.Sync()
}
