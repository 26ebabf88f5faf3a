package outbox

import (
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"persona/wire"
)

// queueBackground hands pdus of room to the outbox of dest as background,
// as a room does for a profile's fan-out.
func (n *node) queueBackground(dest spec.ServerName, room string, pdus ...*wire.OutboundPDU) {
	n.rt.Send(kind, string(dest), &wire.OutboundPDUs{Destination: string(dest), RoomId: room, Pdus: pdus, Background: true})
}

// TestBackgroundFanOutGoesInFullTransactions queues 120 background PDUs of
// 120 rooms a few at a time, with pauses shorter than Linger between them:
// they go in transactions of 50, 50 and 20, the last one Linger after the
// last PDU came.
func TestBackgroundFanOutGoesInFullTransactions(t *testing.T) {
	t.Parallel()
	const linger = 300 * time.Millisecond
	w := newWorld(t)
	n := w.start(Options{Linger: linger, MaxLinger: time.Minute}, time.Minute)
	var want []string
	var last time.Time
	for i := range 120 {
		room := newRoom(w.origin)
		n.queueBackground(w.dest, room, pduAt(room, 1))
		last = time.Now()
		want = append(want, key(room, 1))
		if i%7 == 6 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor(t, 10*time.Second, "every PDU delivered", func() bool { return len(w.pdusTo(w.dest)) == len(want) })
	if got := w.pdusTo(w.dest); !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
	txns := w.peer.delivered()
	var sizes []int
	for _, g := range txns {
		sizes = append(sizes, len(g.pdus))
	}
	if !slices.Equal(sizes, []int{50, 50, 20}) {
		t.Fatalf("transactions carry %v PDUs, want [50 50 20]", sizes)
	}
	if waited := txns[2].arrived.Sub(last); waited < linger {
		t.Errorf("the last transaction arrived %v after the last PDU came, want at least Linger (%v)", waited, linger)
	}
}

// TestClientPDUsDoNotLinger: a lone background PDU waits for Linger, a PDU
// a client waits on goes at once and takes the background ones queued
// before it along, and a steady trickle of background PDUs goes once the
// oldest has waited MaxLinger.
func TestClientPDUsDoNotLinger(t *testing.T) {
	t.Parallel()
	const linger, maxLinger = 2 * time.Second, 3 * time.Second
	w := newWorld(t)
	n := w.start(Options{Linger: linger, MaxLinger: maxLinger}, time.Minute)

	quiet, loud := newRoom(w.origin), newRoom(w.origin)
	n.queueBackground(w.dest, quiet, pduAt(quiet, 1))
	time.Sleep(300 * time.Millisecond)
	if got := w.peer.arrived(); got != 0 {
		t.Fatalf("%d transactions within 300 ms of a lone background PDU, want none before Linger (%v)", got, linger)
	}
	start := time.Now()
	n.queue(w.dest, loud, pduAt(loud, 1))
	waitFor(t, 10*time.Second, "both PDUs delivered", func() bool { return len(w.pdusTo(w.dest)) == 2 })
	txns := w.peer.delivered()
	if len(txns) != 1 || len(txns[0].pdus) != 2 {
		t.Fatalf("the two PDUs went in %d transactions, want one", len(txns))
	}
	if took := txns[0].arrived.Sub(start); took >= linger {
		t.Errorf("a client's PDU arrived %v after it was queued, want less than Linger (%v)", took, linger)
	}

	// A background PDU every 200 ms, shorter than Linger: the first
	// transaction goes once the oldest has waited MaxLinger.
	start = time.Now()
	for pos := uint64(2); time.Since(start) < 2*maxLinger; pos++ {
		n.queueBackground(w.dest, quiet, pduAt(quiet, pos))
		time.Sleep(200 * time.Millisecond)
		if w.peer.arrived() > 1 {
			break
		}
	}
	// The peer counts a transaction as it arrives and records it once
	// answered: wait for the answer of the one that ended the trickle.
	for w.peer.arrived() > 1 && len(w.peer.delivered()) < 2 && time.Since(start) < 3*maxLinger {
		time.Sleep(10 * time.Millisecond)
	}
	txns = w.peer.delivered()
	if len(txns) < 2 {
		t.Fatalf("no transaction within %v of a steady trickle, want one after MaxLinger (%v)", 2*maxLinger, maxLinger)
	}
	if took := txns[1].arrived.Sub(start); took < maxLinger {
		t.Errorf("the trickle's first transaction arrived %v after its first PDU, want at least MaxLinger (%v)", took, maxLinger)
	}
}
