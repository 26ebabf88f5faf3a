package rooms

import (
	"bytes"
	"context"
	"encoding/binary"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"persona/storage"
)

// The answer to another server's transaction is kept under
// fi/<origin>/<txnId> for federation.inbound_txn_ttl, so that a resend of
// the same txnId (its sender missed the answer) gets it again and applies
// nothing. A sweep deletes the records past their time.

// txnKey is where the answer to origin's transaction id is kept.
func txnKey(origin spec.ServerName, id string) []byte {
	return storage.Key("fi", string(origin), id)
}

// txnRecord is answer as kept: the Unix milliseconds of at, 8 bytes
// big-endian, then the answer.
func txnRecord(at time.Time, answer []byte) []byte {
	out := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(answer)), uint64(at.UnixMilli()))
	return append(out, answer...)
}

// txnAnswer is a kept record's answer and the time it was given. A record
// that is only the answer (kept before records had a time) counts as
// given at the zero time.
func txnAnswer(v []byte) (time.Time, []byte) {
	if len(v) < 8 || v[0] == '{' {
		return time.Time{}, v
	}
	return time.UnixMilli(int64(binary.BigEndian.Uint64(v))), v[8:]
}

// sweepEvery is how often records are swept: a quarter of their life, at
// most hourly.
func sweepEvery(ttl time.Duration) time.Duration { return min(ttl/4, time.Hour) }

// sweepTxns deletes expired transaction records every sweepEvery, and
// once at once, until ctx ends.
func (s *Service) sweepTxns(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	ttl := s.cfg.Federation.InboundTxnTTL
	t := time.NewTicker(sweepEvery(ttl))
	defer t.Stop()
	for {
		if n, err := s.expireTxns(time.Now().Add(-ttl)); err != nil {
			s.log.Warn("transaction records not swept", "err", err)
		} else if n > 0 {
			s.log.Debug("transaction records swept", "deleted", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sweepBatch is how many records one scan of a sweep reads, and at most
// deletes in one commit.
const sweepBatch = 1000

// expireTxns deletes the transaction records given before cutoff and
// returns how many it deleted.
func (s *Service) expireTxns(cutoff time.Time) (int, error) {
	prefix := storage.Prefix("fi")
	deleted := 0
	for start := prefix; start != nil; {
		var b storage.Batch
		read, next := 0, []byte(nil)
		err := s.store.Scan(prefix, start, func(k, v []byte) error {
			if read == sweepBatch {
				next = bytes.Clone(k)
				return storage.ErrStopScan
			}
			read++
			if at, _ := txnAnswer(v); at.Before(cutoff) {
				b.Delete(bytes.Clone(k))
			}
			return nil
		})
		if err != nil {
			return deleted, err
		}
		if b.Len() > 0 {
			if err := s.store.CommitSync(&b); err != nil {
				return deleted, err
			}
			deleted += b.Len()
		}
		start = next
	}
	return deleted, nil
}
