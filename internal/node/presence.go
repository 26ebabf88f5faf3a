package node

import "persona/cluster"

// readyMembers is which other members this node lists alive and ready,
// by name. One that turns so (it joined, restarted, or came back from
// suspect) missed the presence changes told while it was not: it is told
// the presence this node decides.
type readyMembers map[string]bool

// newReadyMembers lists the members of ms, but self, alive and ready.
func newReadyMembers(ms []cluster.Member, self string) readyMembers {
	r := readyMembers{}
	for _, m := range ms {
		if m.Name != self {
			r.saw(m)
		}
	}
	return r
}

// saw records m as an event shows it and reports whether it turned alive
// and ready.
func (r readyMembers) saw(m cluster.Member) bool {
	now := m.State == cluster.StateAlive && m.Ready && !m.Leaving
	was := r[m.Name]
	if now {
		r[m.Name] = true
	} else {
		delete(r, m.Name)
	}
	return now && !was
}

// catchUpPresence tells the member of ev, if it turned alive and ready,
// the presence this node decides.
func (n *Node) catchUpPresence(r readyMembers, ev cluster.Event) {
	if ev.Member.Name != n.members.Name() && r.saw(ev.Member) && ev.Member.ActorAddr != "" {
		n.host.CatchUpPresence(ev.Member.ActorAddr)
	}
}
