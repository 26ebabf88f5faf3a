package actors

import (
	"errors"
	"fmt"

	"persona/storage"
)

// formatKey holds the name of the layout a store's data has: a store
// without it that holds data was written before room events were PDUs, and
// is refused rather than misread (its event ids were not reference
// hashes, so no peer could accept its rooms' events).
var formatKey = []byte("format")

// dataFormat is the layout this build reads and writes.
const dataFormat = "pdu/1"

// ErrOldFormat is the error for a data directory of an older layout.
var ErrOldFormat = errors.New("the data directory was written by an older persona whose room events are not Matrix PDUs, and cannot be read: start with an empty data_dir (move the old one aside; its accounts and rooms are not carried over)")

// checkFormat refuses a store of another layout and marks a new one.
func checkFormat(store *storage.Store) error {
	v, err := store.Get(formatKey)
	switch {
	case err == nil && string(v) == dataFormat:
		return nil
	case err == nil:
		return fmt.Errorf("the data directory holds data of layout %q; this persona reads %q", v, dataFormat)
	case !errors.Is(err, storage.ErrNotFound):
		return err
	}
	empty := true
	if err := store.Scan(storage.Prefix("p"), nil, func(k, v []byte) error {
		empty = false
		return storage.ErrStopScan
	}); err != nil {
		return err
	}
	if !empty {
		return ErrOldFormat
	}
	var b storage.Batch
	b.Set(formatKey, []byte(dataFormat))
	return store.CommitSync(&b)
}
