package cluster

import "time"

// State is a member's state as this node sees it.
type State int

// The states of a member.
const (
	// StateAlive: the member answers probes.
	StateAlive State = iota
	// StateSuspect: a probe of this node went unanswered; unless the
	// member refutes it, it is declared dead once the suspicion times out.
	StateSuspect
	// StateDead: the member stopped answering and was declared failed.
	StateDead
	// StateLeft: the member left the cluster on purpose.
	StateLeft
)

// States lists every state, in the order of their values.
var States = []State{StateAlive, StateSuspect, StateDead, StateLeft}

// String returns alive, suspect, dead or left.
func (s State) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateSuspect:
		return "suspect"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	}
	return "unknown"
}

// Member is one node of the cluster as this node sees it.
type Member struct {
	// Name is the node's name, unique in the cluster.
	Name string
	// Addr is the host:port of its membership (gossip) listener.
	Addr string
	// State is alive, suspect, dead or left.
	State State
	// Since is when this node saw the member enter State.
	Since time.Time
	// Meta is what the member last said about itself. MetaErr is set,
	// and Meta zero, when its metadata could not be read.
	Meta
	// MetaErr reports metadata this node cannot read (an encoding it does
	// not know, or a different number of partitions).
	MetaErr error
	// Leaving reports that the member announced it is leaving; it is
	// listed left once it is gone.
	Leaving bool
}

// EventKind says what happened to a member.
type EventKind int

// The kinds of membership events.
const (
	// EventJoin: a member joined, or came back after it was dead or left.
	EventJoin EventKind = iota
	// EventUpdate: a member changed its metadata, or turned suspect or
	// alive again.
	EventUpdate
	// EventFail: a member was declared dead.
	EventFail
	// EventLeave: a member left on purpose.
	EventLeave
)

// EventKinds lists every kind, in the order of their values.
var EventKinds = []EventKind{EventJoin, EventUpdate, EventFail, EventLeave}

// String returns join, update, fail or leave.
func (k EventKind) String() string {
	switch k {
	case EventJoin:
		return "join"
	case EventUpdate:
		return "update"
	case EventFail:
		return "fail"
	case EventLeave:
		return "leave"
	}
	return "unknown"
}

// Event is a change of one member.
type Event struct {
	// Kind says what happened.
	Kind EventKind
	// Member is the member as it is after the change.
	Member Member
}
