package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Badger, with SyncWrites off, leaves the syncing of its memtable logs to
// the committer, and DB.Sync covers the current memtable's log alone. A
// write that fills a memtable starts a new log; badger never syncs the
// previous one: its writes become durable when its table is flushed, maybe
// seconds later. So before reporting a round, sync also syncs the logs
// started before the current one, or a write acknowledged just before the
// switch could be lost with the machine. Only the committer writes (values
// stay in the LSM, so value-log GC moves nothing), so no switch happens
// between a round's writes and its sync.

// memExt names badger's memtable log files: a sequence number and ".mem".
const memExt = ".mem"

// sync makes every write before it durable.
func (s *Store) sync() error {
	if err := s.syncRotated(); err != nil {
		return err
	}
	return s.db.Sync()
}

// syncRotated syncs the earlier logs if badger has started a new memtable
// log since the last call.
func (s *Store) syncRotated() error {
	if s.dir == "" { // in memory
		return nil
	}
	if exists(walPath(s.dir, s.wal+1)) || !exists(walPath(s.dir, s.wal)) {
		wal, n, err := syncWALs(s.dir)
		if err != nil {
			return err
		}
		s.wal = wal
		s.statsMu.Lock()
		s.stats.Logs += uint64(n)
		s.statsMu.Unlock()
	}
	return nil
}

// syncWALs syncs every memtable log in dir but the newest, whose number it
// returns with the count synced.
func syncWALs(dir string) (newest, synced int, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, err
	}
	var fids []int
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), memExt); ok {
			if fid, err := strconv.Atoi(n); err == nil {
				fids = append(fids, fid)
			}
		}
	}
	if len(fids) == 0 {
		return 0, 0, errors.New("no memtable log in the data directory")
	}
	newest = fids[0]
	for _, fid := range fids {
		newest = max(newest, fid)
	}
	for _, fid := range fids {
		if fid == newest {
			continue
		}
		if err := syncFile(walPath(dir, fid)); err != nil {
			return 0, 0, err
		}
		synced++
	}
	return newest, synced, nil
}

func walPath(dir string, fid int) string {
	return filepath.Join(dir, fmt.Sprintf("%05d%s", fid, memExt))
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// syncFile fsyncs path; a file already gone (flushed to a table and
// removed) is durable and no error.
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
