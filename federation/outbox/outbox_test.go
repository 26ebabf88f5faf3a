package outbox

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// world is an origin with its key, a peer serving dest (and more names) and
// a data directory for the origin's nodes.
type world struct {
	t      *testing.T
	origin spec.ServerName
	key    ed25519.PrivateKey
	peer   *peer
	dest   spec.ServerName
	dir    string
}

func newWorld(t *testing.T, more ...spec.ServerName) *world {
	origin, pub, key := testOrigin(t)
	dest := spec.ServerName("peer.test")
	return &world{t: t, origin: origin, key: key, dest: dest, dir: t.TempDir(),
		peer: newPeer(t, origin, pub, append([]spec.ServerName{dest}, more...)...)}
}

// start starts a node on the world's directory, sending to its peer.
func (w *world) start(opts Options, passivateAfter time.Duration) *node {
	w.t.Helper()
	opts.Origin, opts.Client = w.origin, w.peer.client(w.origin, w.key)
	return startNode(w.t, w.dir, opts, passivateAfter)
}

// pdusTo returns the PDUs the peer got in transactions answered 200 for
// dest, in the order sent, and fails on one carried by two transactions of
// different ids.
func (w *world) pdusTo(dest spec.ServerName) []string {
	w.t.Helper()
	var out []string
	txnOf := map[string]string{}
	for _, g := range w.peer.txns() {
		if g.dest != dest {
			continue
		}
		for _, raw := range g.pdus {
			room, pos := which(w.t, raw)
			k := key(room, pos)
			if id, ok := txnOf[k]; ok && id != g.id {
				w.t.Fatalf("%s was sent in transactions %s and %s", k, id, g.id)
			}
			txnOf[k] = g.id
			if g.status == http.StatusOK {
				out = append(out, k)
			}
		}
	}
	return out
}

// TestTransactionsCarryAtMost50PDUsAnd100EDUs queues 120 PDUs of three rooms
// with EDUs between them behind a transaction the peer holds, and checks
// they go in exactly three transactions of 50, 50 and 20 PDUs, in queue
// order, the EDUs riding along; then that 150 EDUs go as 100 and 50.
func TestTransactionsCarryAtMost50PDUsAnd100EDUs(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	n := w.start(Options{}, time.Minute)

	w.peer.setHold()
	first := newRoom(w.origin)
	n.queue(w.dest, first, pduAt(first, 1))
	waitFor(t, 10*time.Second, "the first transaction reaches the peer", func() bool { return w.peer.arrived() == 1 })
	rooms := []string{newRoom(w.origin), newRoom(w.origin), newRoom(w.origin)}
	order := []string{key(first, 1)}
	var edus []string
	for step := range 4 {
		for _, r := range rooms {
			from := uint64(step*10 + 1)
			n.queue(w.dest, r, pdus(r, from, from+9)...)
			for p := from; p <= from+9; p++ {
				order = append(order, key(r, p))
			}
			for range 3 {
				c := fmt.Sprintf(`{"n":%q}`, token(4))
				n.queueEDU(w.dest, "m.test", []byte(c))
				edus = append(edus, c)
			}
		}
	}
	waitFor(t, 10*time.Second, "every room acked at 40, 157 entries queued", func() bool {
		for _, r := range rooms {
			if n.acks.top(r) != 40 {
				return false
			}
		}
		return n.state(w.dest).Queued == 157
	})
	w.peer.release()
	waitFor(t, 10*time.Second, "the peer got every PDU", func() bool { return len(w.pdusTo(w.dest)) == len(order) })

	if got := w.pdusTo(w.dest); !slices.Equal(got, order) {
		t.Fatalf("PDUs arrived in the order %v, want the queue's %v", got, order)
	}
	txns := w.peer.delivered()
	if len(txns) != 4 {
		t.Fatalf("%d transactions, want the held one and 3", len(txns))
	}
	var gotEDUs []string
	ids := map[string]bool{}
	for i, g := range txns {
		if ids[g.id] {
			t.Errorf("transaction id %s used twice", g.id)
		}
		ids[g.id] = true
		if i > 0 && len(g.edus) == 0 {
			t.Errorf("transaction %d carries no EDU: they ride along with PDUs", i)
		}
		for _, e := range g.edus {
			gotEDUs = append(gotEDUs, string(e.Content))
		}
	}
	if got := []int{len(txns[1].pdus), len(txns[2].pdus), len(txns[3].pdus)}; !slices.Equal(got, []int{50, 50, 20}) {
		t.Errorf("transactions carry %v PDUs, want [50 50 20]", got)
	}
	if !slices.Equal(gotEDUs, edus) {
		t.Errorf("EDUs arrived as %v, want %v", gotEDUs, edus)
	}

	// 150 EDUs behind a held one go as 100 and 50.
	w.peer.setHold()
	n.queueEDU(w.dest, "m.test", []byte(`{}`))
	waitFor(t, 10*time.Second, "the held transaction reaches the peer", func() bool { return w.peer.arrived() == 5 })
	for range 150 {
		n.queueEDU(w.dest, "m.test", fmt.Appendf(nil, `{"n":%q}`, token(4)))
	}
	waitFor(t, 10*time.Second, "151 EDUs queued", func() bool { return n.state(w.dest).Queued == 151 })
	w.peer.release()
	waitFor(t, 10*time.Second, "three more transactions", func() bool { return len(w.peer.delivered()) == 7 })
	txns = w.peer.delivered()[4:]
	if got := []int{len(txns[0].edus), len(txns[1].edus), len(txns[2].edus)}; !slices.Equal(got, []int{1, 100, 50}) {
		t.Errorf("transactions carry %v EDUs, want [1 100 50]", got)
	}
}

// TestFailingDestinationGetsTheSameTransactionAgain has the peer fail three
// times: each retry carries the same txnId and contents, after a back-off
// of at least BackoffMin within a window that doubles; PDUs queued during
// the first back-off wait for it (the next attempt is the same
// transaction); everything arrives once, in order.
func TestFailingDestinationGetsTheSameTransactionAgain(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.peer.failNext(3)
	const lo, hi = 100 * time.Millisecond, 2 * time.Second
	n := w.start(Options{BackoffMin: lo, BackoffMax: hi}, time.Minute)
	room := newRoom(w.origin)
	n.queue(w.dest, room, pdus(room, 1, 5)...)
	n.queueEDU(w.dest, "m.test", fmt.Appendf(nil, `{"n":%q}`, token(4)))
	waitFor(t, 10*time.Second, "the first attempt fails", func() bool { return len(w.peer.txns()) == 1 })
	n.queue(w.dest, room, pdus(room, 6, 8)...)
	waitFor(t, 10*time.Second, "pos 8 acked", func() bool { return n.acks.top(room) == 8 })
	want := []string{}
	for p := uint64(1); p <= 8; p++ {
		want = append(want, key(room, p))
	}
	waitFor(t, 20*time.Second, "every PDU delivered", func() bool { return len(w.pdusTo(w.dest)) == 8 })
	if got := w.pdusTo(w.dest); !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}

	txns := w.peer.txns()
	if len(txns) < 4 {
		t.Fatalf("%d requests, want 3 failures and a success", len(txns))
	}
	for i, g := range txns[:4] {
		wantStatus := http.StatusInternalServerError
		if i == 3 {
			wantStatus = http.StatusOK
		}
		if g.status != wantStatus {
			t.Errorf("attempt %d answered %d, want %d", i+1, g.status, wantStatus)
		}
		if i == 0 {
			continue
		}
		a := txns[0]
		if g.id != a.id || g.ts != a.ts || !sameJSON(g.pdus, a.pdus) || len(g.edus) != len(a.edus) {
			t.Errorf("attempt %d is transaction %s (%d PDUs), want %s (%d PDUs) again", i+1, g.id, len(g.pdus), a.id, len(a.pdus))
		}
		for j := range min(len(g.edus), len(a.edus)) {
			if !bytes.Equal(g.edus[j].Content, a.edus[j].Content) {
				t.Errorf("attempt %d carries EDU %s, want %s again", i+1, g.edus[j].Content, a.edus[j].Content)
			}
		}
		gap, window := g.arrived.Sub(txns[i-1].arrived), min(hi, lo<<i)
		if gap < lo || gap > window+5*time.Second { // loose: the machine may be busy
			t.Errorf("attempt %d came %v after the one before, want between %v and about %v", i+1, gap, lo, window)
		}
	}
	if got := n.metric("persona_federation_transaction_failures_total"); got != 3 {
		t.Errorf("failures counted: %v, want 3", got)
	}
	waitFor(t, 5*time.Second, "the queue empty", func() bool { return n.state(w.dest).Queued == 0 })
	if st := n.state(w.dest); st.Failures != 0 || st.NextAttemptMs != 0 {
		t.Errorf("state after delivery: %v, want no failures and no attempt due", st)
	}
	if got := n.metric(`persona_federation_outbox_backoff_seconds{destination="peer.test"}`); got != 0 {
		t.Errorf("back-off gauge after delivery: %v, want 0", got)
	}
}

// sameJSON reports whether a and b hold the same bytes.
func sameJSON[T ~[]byte](a, b []T) bool {
	return slices.EqualFunc(a, b, func(x, y T) bool { return bytes.Equal(x, y) })
}

// TestRestartSendsTheTransactionInFlightAgain stops the node while the peer
// holds a transaction, reopens the store, and checks that the same txnId
// goes again with the same PDUs, then the rest, each PDU under one txnId;
// the restart wakes the destination with a queue alone.
func TestRestartSendsTheTransactionInFlightAgain(t *testing.T) {
	t.Parallel()
	idle := spec.ServerName("idle.test")
	w := newWorld(t, idle)
	n := w.start(Options{}, time.Minute)
	other := newRoom(w.origin)
	n.queue(idle, other, pdus(other, 1, 2)...)
	waitFor(t, 10*time.Second, "idle.test has its PDUs", func() bool { return len(w.pdusTo(idle)) == 2 })

	w.peer.setHold()
	a, b := newRoom(w.origin), newRoom(w.origin)
	n.queue(w.dest, a, pdus(a, 1, 10)...)
	waitFor(t, 10*time.Second, "a transaction reaches the peer", func() bool { return w.peer.arrived() == 2 })
	n.queue(w.dest, b, pdus(b, 1, 10)...)
	waitFor(t, 10*time.Second, "room b acked", func() bool { return n.acks.top(b) == 10 })
	inFlight := n.state(w.dest).TxnInFlight
	n.stop()
	waitFor(t, 10*time.Second, "the peer sees the held transaction abandoned", func() bool {
		return slices.ContainsFunc(w.peer.txns(), func(g gotTxn) bool { return g.status == 0 })
	})
	w.peer.release()

	n = w.start(Options{}, time.Minute)
	waitFor(t, 10*time.Second, "every PDU delivered after the restart", func() bool { return len(w.pdusTo(w.dest)) == 20 })
	var abandoned, delivered []gotTxn
	for _, g := range w.peer.txns() {
		switch {
		case g.dest != w.dest:
		case g.status == 0:
			abandoned = append(abandoned, g)
		case g.status == http.StatusOK:
			delivered = append(delivered, g)
		}
	}
	if len(abandoned) != 1 || abandoned[0].id != inFlight {
		t.Fatalf("transactions cut by the stop: %d (ids %v), want %s alone", len(abandoned), ids(abandoned), inFlight)
	}
	if d := delivered[0]; d.id != inFlight || d.ts != abandoned[0].ts || !sameJSON(d.pdus, abandoned[0].pdus) {
		t.Errorf("first transaction after the restart: %s with %d PDUs, want %s with the same %d PDUs",
			d.id, len(d.pdus), inFlight, len(abandoned[0].pdus))
	}
	var want []string
	for _, r := range []string{a, b} {
		for p := uint64(1); p <= 10; p++ {
			want = append(want, key(r, p))
		}
	}
	if got := w.pdusTo(w.dest); !slices.Equal(got, want) {
		t.Errorf("delivered %v, want %v", got, want)
	}
	if got := n.metric(`persona_actor_activations_total{kind="outbox"}`); got != 1 {
		t.Errorf("%v outboxes activated by the restart, want 1: idle.test has nothing queued", got)
	}
	dests, err := n.svc.Destinations(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(dests) != 2 || dests[0].Destination != string(idle) || dests[1].Destination != string(w.dest) {
		t.Errorf("destinations %v, want idle.test and peer.test", dests)
	}
}

func ids(txns []gotTxn) []string {
	var out []string
	for _, g := range txns {
		out = append(out, g.id)
	}
	return out
}

// TestDuplicatePDUsAreQueuedOnce resends PDUs already queued, alone and with
// new ones: each is queued and delivered once, and the acks are cumulative.
func TestDuplicatePDUsAreQueuedOnce(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	n := w.start(Options{}, time.Minute)
	w.peer.setHold()
	first := newRoom(w.origin)
	n.queue(w.dest, first, pduAt(first, 1))
	waitFor(t, 10*time.Second, "the first transaction reaches the peer", func() bool { return w.peer.arrived() == 1 })

	room := newRoom(w.origin)
	batch := pdus(room, 1, 5)
	n.queue(w.dest, room, batch...)
	waitFor(t, 10*time.Second, "pos 5 acked", func() bool { return n.acks.top(room) == 5 })
	n.queue(w.dest, room, batch...)
	waitFor(t, 10*time.Second, "the resend acked", func() bool { return len(n.acks.of(room)) == 2 })
	if st := n.state(w.dest); st.Queued != 6 {
		t.Errorf("%d entries queued after the resend, want 6", st.Queued)
	}
	n.queue(w.dest, room, append(batch[2:], pdus(room, 6, 8)...)...)
	waitFor(t, 10*time.Second, "pos 8 acked", func() bool { return n.acks.top(room) == 8 })
	if st := n.state(w.dest); st.Queued != 9 {
		t.Errorf("%d entries queued, want 9", st.Queued)
	}
	if got := n.acks.of(room); !slices.Equal(got, []uint64{5, 5, 8}) {
		t.Errorf("acks %v, want [5 5 8]", got)
	}
	w.peer.release()
	want := []string{key(first, 1)}
	for p := uint64(1); p <= 8; p++ {
		want = append(want, key(room, p))
	}
	waitFor(t, 10*time.Second, "every PDU delivered", func() bool { return len(w.pdusTo(w.dest)) >= len(want) })
	if got := w.pdusTo(w.dest); !slices.Equal(got, want) {
		t.Errorf("delivered %v, want %v", got, want)
	}
}

// clock is a test clock that can be moved forward.
type clock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

// TestHorizonKeepsEachRoomsLatestPDU lets queued entries grow older than the
// horizon behind a held transaction: the next transaction carries each
// room's latest PDU alone, and the EDUs, and the drop is counted.
func TestHorizonKeepsEachRoomsLatestPDU(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	c := &clock{}
	n := w.start(Options{Horizon: time.Hour, Now: c.now}, time.Minute)
	w.peer.setHold()
	first := newRoom(w.origin)
	n.queue(w.dest, first, pduAt(first, 1))
	waitFor(t, 10*time.Second, "the first transaction reaches the peer", func() bool { return w.peer.arrived() == 1 })

	a, b, r := newRoom(w.origin), newRoom(w.origin), newRoom(w.origin)
	for _, room := range []string{a, b, r} {
		n.queue(w.dest, room, pdus(room, 1, 10)...)
	}
	n.queueEDU(w.dest, "m.test", []byte(`{"kept":1}`))
	n.queueEDU(w.dest, "m.test", []byte(`{"kept":2}`))
	waitFor(t, 10*time.Second, "33 entries queued", func() bool { return n.state(w.dest).Queued == 33 })
	c.advance(2 * time.Hour)
	n.queue(w.dest, a, pduAt(a, 11))
	waitFor(t, 10*time.Second, "a's pos 11 acked", func() bool { return n.acks.top(a) == 11 })
	w.peer.release()

	want := []string{key(first, 1), key(b, 10), key(r, 10), key(a, 11)}
	waitFor(t, 10*time.Second, "the latest PDUs delivered", func() bool { return len(w.pdusTo(w.dest)) >= len(want) })
	if got := w.pdusTo(w.dest); !slices.Equal(got, want) {
		t.Errorf("delivered %v, want %v", got, want)
	}
	if txns := w.peer.delivered(); len(txns) != 2 || len(txns[1].edus) != 2 {
		t.Errorf("%d transactions, want 2, the second with the 2 EDUs", len(txns))
	}
	waitFor(t, 10*time.Second, "the queue empty", func() bool { return n.state(w.dest).Queued == 0 })
	if got := n.metric(`persona_federation_outbox_dropped_pdus_total{reason="horizon"}`); got != 28 {
		t.Errorf("dropped PDUs counted: %v, want 28", got)
	}
	if st := n.state(w.dest); st.DroppedPdus != 28 {
		t.Errorf("state %v, want 28 dropped", st)
	}
}

// TestOneTransactionInFlight queues 120 PDUs while the peer holds the first
// transaction: nothing else reaches it meanwhile, and after the release
// the rest comes one transaction at a time.
func TestOneTransactionInFlight(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	n := w.start(Options{}, time.Minute)
	w.peer.setHold()
	var want []string
	for step := range 12 {
		room := newRoom(w.origin)
		n.queue(w.dest, room, pdus(room, 1, 10)...)
		for p := uint64(1); p <= 10; p++ {
			want = append(want, key(room, p))
		}
		if step == 0 {
			waitFor(t, 10*time.Second, "the first transaction reaches the peer", func() bool { return w.peer.arrived() == 1 })
		}
	}
	waitFor(t, 10*time.Second, "120 PDUs queued", func() bool { return n.state(w.dest).Queued == 120 })
	time.Sleep(200 * time.Millisecond)
	if got := w.peer.arrived(); got != 1 {
		t.Fatalf("%d transactions reached the peer while it held the first, want 1", got)
	}
	w.peer.release()
	waitFor(t, 10*time.Second, "every PDU delivered", func() bool { return len(w.pdusTo(w.dest)) == 120 })
	if got := w.pdusTo(w.dest); !slices.Equal(got, want) {
		t.Errorf("delivered %v, want %v", got, want)
	}
	w.peer.mu.Lock()
	most := w.peer.maxActive
	w.peer.mu.Unlock()
	if most != 1 {
		t.Errorf("the peer had %d transactions at once, want 1", most)
	}
}

// TestRefusedPDUsAreDelivered has the peer answer 200 with an error for
// every PDU: the transaction is delivered, the refusals counted, nothing
// sent again.
func TestRefusedPDUsAreDelivered(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.peer.refuse = true
	n := w.start(Options{}, time.Minute)
	room := newRoom(w.origin)
	n.queue(w.dest, room, pdus(room, 1, 3)...)
	waitFor(t, 10*time.Second, "the PDUs delivered", func() bool { return len(w.pdusTo(w.dest)) == 3 })
	waitFor(t, 5*time.Second, "the queue empty", func() bool { return n.state(w.dest).Queued == 0 })
	time.Sleep(100 * time.Millisecond) // five times BackoffMin: time for a resend that must not come
	if got := w.peer.arrived(); got != 1 {
		t.Errorf("%d transactions, want 1", got)
	}
	if got := n.metric("persona_federation_pdus_refused_total"); got != 3 {
		t.Errorf("refused PDUs counted: %v, want 3", got)
	}
}

// TestOutboxPassivatesOnceEmpty checks that an outbox backing off stays in
// memory past PassivateAfter, and passivates once its queue is delivered.
func TestOutboxPassivatesOnceEmpty(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.peer.failNext(1 << 20)
	n := w.start(Options{BackoffMin: 20 * time.Millisecond, BackoffMax: 50 * time.Millisecond}, 100*time.Millisecond)
	room := newRoom(w.origin)
	n.queue(w.dest, room, pdus(room, 1, 3)...)
	waitFor(t, 10*time.Second, "five attempts", func() bool { return w.peer.arrived() >= 5 })
	time.Sleep(300 * time.Millisecond)
	if got := n.metric(`persona_actor_passivations_total{kind="outbox"}`); got > 0 {
		t.Fatalf("an outbox with a queue passivated (%v)", got)
	}
	if st := n.state(w.dest); st.Failures < 5 || st.Queued != 3 {
		t.Fatalf("state %v, want 5 failures or more and 3 entries queued", st)
	}
	w.peer.failNext(0)
	waitFor(t, 10*time.Second, "the PDUs delivered", func() bool { return len(w.pdusTo(w.dest)) == 3 })
	waitFor(t, 10*time.Second, "the outbox passivated", func() bool {
		return n.metric(`persona_actor_passivations_total{kind="outbox"}`) == 1
	})
	if got := n.metric(`persona_federation_outbox_queued{destination="peer.test"}`); got != -1 {
		t.Errorf("a passivated outbox still exports its queue (%v)", got)
	}
}

// A destination that refuses a whole transaction with a 4xx would refuse
// the same body again: the outbox drops its PDUs (counted) and goes on to
// the next transaction, where a 429 or a 500 is sent again after a
// back-off.
func TestRefusedTransactionIsDroppedNotRetried(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.peer.answerNext(1, http.StatusBadRequest)
	n := w.start(Options{BackoffMin: 20 * time.Millisecond, BackoffMax: 50 * time.Millisecond}, time.Minute)
	room := newRoom(w.origin)
	n.queue(w.dest, room, pdus(room, 1, 5)...)
	waitFor(t, 10*time.Second, "the 400", func() bool { return len(w.peer.txns()) == 1 })
	waitFor(t, 10*time.Second, "the queue empty after it", func() bool { return n.state(w.dest).Queued == 0 })
	if txns := w.peer.txns(); len(txns) != 1 || txns[0].status != http.StatusBadRequest {
		t.Fatalf("%d requests, want the one answered 400", len(txns))
	}
	if got := n.metric(`persona_federation_outbox_dropped_pdus_total{reason="refused"}`); got != 5 {
		t.Errorf("refused PDUs dropped: %v, want 5", got)
	}
	if st := n.state(w.dest); st.DroppedPdus != 5 || st.Failures != 0 {
		t.Errorf("state %v, want 5 dropped and no failure in a row", st)
	}

	w.peer.answerNext(2, http.StatusTooManyRequests)
	n.queue(w.dest, room, pdus(room, 6, 7)...)
	waitFor(t, 10*time.Second, "pos 6 and 7 delivered", func() bool { return len(w.pdusTo(w.dest)) == 2 })
	if got, want := w.pdusTo(w.dest), []string{key(room, 6), key(room, 7)}; !slices.Equal(got, want) {
		t.Errorf("delivered %v, want %v", got, want)
	}
	if txns := w.peer.txns(); len(txns) != 4 || txns[3].status != http.StatusOK {
		t.Errorf("%d requests, want the 400, two 429s and a 200", len(txns))
	}
}
