package outbox

import (
	"bytes"
	"fmt"

	"persona/host"
	"persona/storage"
)

// An older persona kept every destination's keys under fo/<destination>/,
// in the node's own key range, where a cluster does not replicate them.
// migrate moves them under the destination's partition (the same key
// after the destination): it copies them all, then deletes the old ones,
// in batches of one key range each. A crash between the two only copies
// the same values again at the next start: nothing writes a queue before
// migrate has ended.
func (s *Service) migrate() error {
	old := storage.Prefix("fo")
	var b storage.Batch
	part := -1 // the partition of the keys in b
	moved := 0
	err := s.store.Scan(old, nil, func(k, v []byte) error {
		dest, rest, ok := bytes.Cut(k[len(old):], []byte{0})
		if !ok {
			return fmt.Errorf("outbox: stray key %q", k)
		}
		p := s.rt.Partition(string(dest))
		if b.Len() > 0 && (p != part || b.Len() >= maxWriteOps) {
			if err := s.store.CommitSync(&b); err != nil {
				return err
			}
			b = storage.Batch{}
		}
		part = p
		b.Set(append(storage.Prefix("p", host.PartitionKey(p), "fo", string(dest)), rest...), bytes.Clone(v))
		moved++
		return nil
	})
	if err == nil && b.Len() > 0 {
		err = s.store.CommitSync(&b)
	}
	if err != nil || moved == 0 {
		return wrapMigrate(err)
	}
	b = storage.Batch{}
	err = s.store.Scan(old, nil, func(k, _ []byte) error {
		if b.Len() >= maxWriteOps {
			if err := s.store.CommitSync(&b); err != nil {
				return err
			}
			b = storage.Batch{}
		}
		b.Delete(bytes.Clone(k))
		return nil
	})
	if err == nil && b.Len() > 0 {
		err = s.store.CommitSync(&b)
	}
	if err == nil {
		s.opts.Log.Info("outbox moved its queues under their partitions", "keys", moved)
	}
	return wrapMigrate(err)
}

func wrapMigrate(err error) error {
	if err != nil {
		return fmt.Errorf("outbox: move the queues under their partitions: %w", err)
	}
	return nil
}
