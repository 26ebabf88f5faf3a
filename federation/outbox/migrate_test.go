package outbox

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"persona/storage"
)

// TestOlderLayoutIsMovedUnderPartitions writes a destination's queue, with
// a transaction in flight, in the layout of an older persona (fo/ at the
// top of the store), and checks that a start moves every key under the
// destination's partition and sends the transaction in flight first, with
// its id, then the rest, in order.
func TestOlderLayoutIsMovedUnderPartitions(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	n := w.start(Options{}, time.Minute)
	w.peer.setHold()
	a := newRoom(w.origin)
	n.queue(w.dest, a, pdus(a, 1, 10)...)
	waitFor(t, 10*time.Second, "a transaction reaches the peer", func() bool { return w.peer.arrived() == 1 })
	n.queue(w.dest, a, pdus(a, 11, 20)...)
	waitFor(t, 10*time.Second, "the room acked", func() bool { return n.acks.top(a) == 20 })
	inFlight := n.state(w.dest).TxnInFlight
	n.stop()
	waitFor(t, 10*time.Second, "the peer sees the held transaction abandoned", func() bool {
		return slices.ContainsFunc(w.peer.txns(), func(g gotTxn) bool { return g.status == 0 })
	})
	w.peer.release()

	// Put the keys back where an older persona kept them.
	st, err := storage.Open(w.dir, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	root := keysOf(n.rt, string(w.dest)).past()
	root = root[:len(root)-1]
	var sets, dels storage.Batch
	if err := st.Scan(root, nil, func(k, v []byte) error {
		sets.Set(append(storage.Key("fo", string(w.dest)), k[len(root):]...), bytes.Clone(v))
		dels.Delete(bytes.Clone(k))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if sets.Len() < 22 { // 20 entries, the room's mark, the record
		t.Fatalf("%d keys under %q, want at least 22", sets.Len(), root)
	}
	for _, b := range []*storage.Batch{&sets, &dels} {
		if err := st.CommitSync(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	n = w.start(Options{}, time.Minute)
	waitFor(t, 10*time.Second, "every PDU delivered", func() bool { return len(w.pdusTo(w.dest)) == 20 })
	var want []string
	for p := uint64(1); p <= 20; p++ {
		want = append(want, key(a, p))
	}
	if got := w.pdusTo(w.dest); !slices.Equal(got, want) {
		t.Errorf("delivered %v, want %v", got, want)
	}
	var sent []string
	for _, g := range w.peer.txns() {
		if g.status != 0 {
			sent = append(sent, g.id)
		}
	}
	if len(sent) == 0 || sent[0] != inFlight {
		t.Errorf("transactions answered %v, want %s first", sent, inFlight)
	}
	left := 0
	if err := n.store.Scan(storage.Prefix("fo"), nil, func(_, _ []byte) error { left++; return nil }); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d keys left under fo/", left)
	}
}
