package cluster

import (
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate is what memberlist calls back. memberlist holds its node lock
// during every call but NodeMeta's and the log's: a call only records a
// copy of what it was told, for the membership's loop to apply, and never
// calls memberlist (its Members would deadlock).
type delegate struct{ m *Membership }

var (
	_ memberlist.Delegate         = delegate{}
	_ memberlist.EventDelegate    = delegate{}
	_ memberlist.AliveDelegate    = delegate{}
	_ memberlist.ConflictDelegate = delegate{}
)

// NodeMeta returns the local node's encoded metadata.
func (d delegate) NodeMeta(int) []byte {
	d.m.mu.Lock()
	defer d.m.mu.Unlock()
	return d.m.meta
}

// NotifyMsg ignores user messages: the membership sends none.
func (delegate) NotifyMsg([]byte) {}

// GetBroadcasts returns nothing: the membership broadcasts no user data.
func (delegate) GetBroadcasts(int, int) [][]byte { return nil }

// LocalState returns nothing: all the membership says is in the metadata.
func (delegate) LocalState(bool) []byte { return nil }

// MergeRemoteState ignores the remote state, which is always empty.
func (delegate) MergeRemoteState([]byte, bool) {}

// NotifyJoin records that n joined or came back.
func (d delegate) NotifyJoin(n *memberlist.Node) { d.m.inbox.push(noteOf(noteJoin, n)) }

// NotifyUpdate records n's new metadata or address.
func (d delegate) NotifyUpdate(n *memberlist.Node) { d.m.inbox.push(noteOf(noteUpdate, n)) }

// NotifyLeave records that n was declared dead or left. Which of the two
// memberlist does not say (the Node's State is not set): the view tells
// them apart by the leaving flag of n's last metadata.
func (d delegate) NotifyLeave(n *memberlist.Node) { d.m.inbox.push(noteOf(noteGone, n)) }

// NotifyAlive records an alive message about n (one that refutes a
// suspicion among them) and accepts it.
func (d delegate) NotifyAlive(n *memberlist.Node) error {
	d.m.inbox.push(note{kind: noteAlive, name: n.Name, at: time.Now()})
	return nil
}

// NotifyConflict logs two nodes claiming one name.
func (d delegate) NotifyConflict(existing, other *memberlist.Node) {
	d.m.log.Error("two nodes claim one name: give each node its own cluster.node_name",
		"name", existing.Name, "known_at", existing.Address(), "claimed_from", other.Address())
}

// suspectLine is the line memberlist logs when a probe of a node went
// unanswered and it suspects the node: memberlist tells its delegates
// nothing of suspicion, and the state in Members() is read racily.
var suspectLine = regexp.MustCompile(`^Suspect (.+) has failed, no acks received$`)

// onLogLine records a suspicion memberlist logged.
func (m *Membership) onLogLine(msg string) {
	if s := suspectLine.FindStringSubmatch(msg); s != nil {
		m.inbox.push(note{kind: noteSuspect, name: s[1], at: time.Now()})
	}
}

// noteKind is what a note records.
type noteKind int

const (
	noteJoin noteKind = iota
	noteUpdate
	noteGone
	noteAlive
	noteSuspect
)

// note is one thing memberlist told, copied while memberlist held its lock.
type note struct {
	kind noteKind
	name string
	addr string
	meta []byte
	at   time.Time
}

func noteOf(kind noteKind, n *memberlist.Node) note {
	return note{kind: kind, name: n.Name, addr: n.Address(), meta: slices.Clone(n.Meta), at: time.Now()}
}

// inbox queues notes for the loop without ever blocking the delegate.
type inbox struct {
	mu    sync.Mutex
	notes []note
	wake  chan struct{}
}

func newInbox() *inbox { return &inbox{wake: make(chan struct{}, 1)} }

func (b *inbox) push(n note) {
	b.mu.Lock()
	b.notes = append(b.notes, n)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// take returns the notes queued so far, oldest first.
func (b *inbox) take() []note {
	b.mu.Lock()
	defer b.mu.Unlock()
	notes := b.notes
	b.notes = nil
	return notes
}
