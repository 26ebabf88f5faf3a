package cluster

import (
	"bytes"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"persona/metrics"
)

// view is this node's copy of the membership: every member it heard of,
// built from memberlist's notifications alone (the nodes memberlist's
// Members returns are rewritten under its lock while callers read them).
// The loop is its only writer.
type view struct {
	self       string
	partitions int
	suspicion  suspicion
	metrics    *metrics.Metrics
	log        *slog.Logger

	mu     sync.Mutex
	byName map[string]*entry
	subs   map[*subscription]struct{}
	closed bool
}

// entry is a member and its raw metadata.
type entry struct {
	Member
	raw          []byte
	suspectUntil time.Time // when a suspicion read from the log lapses
}

func newView(self string, partitions int, s suspicion, m *metrics.Metrics, log *slog.Logger) *view {
	v := &view{self: self, partitions: partitions, suspicion: s, metrics: m, log: log,
		byName: map[string]*entry{}, subs: map[*subscription]struct{}{}}
	v.count()
	return v
}

// members returns a copy of every member, by name.
func (v *view) members() []Member {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]Member, 0, len(v.byName))
	for _, name := range slices.Sorted(maps.Keys(v.byName)) {
		m := v.byName[name].Member
		m.Meta = m.Meta.clone()
		out = append(out, m)
	}
	return out
}

// alone reports whether no member but this node is alive or suspect.
func (v *view) alone() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for name, e := range v.byName {
		if name != v.self && (e.State == StateAlive || e.State == StateSuspect) {
			return false
		}
	}
	return true
}

// deadAddr returns the address of a member declared dead, picked at
// random, or "" for none.
func (v *view) deadAddr() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	var addrs []string
	for _, e := range v.byName {
		if e.State == StateDead {
			addrs = append(addrs, e.Addr)
		}
	}
	if len(addrs) == 0 {
		return ""
	}
	return addrs[rand.IntN(len(addrs))]
}

// apply applies notes in order and publishes the events they make.
func (v *view) apply(notes []note) {
	if len(notes) == 0 {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	var events []Event
	for _, n := range notes {
		if ev, ok := v.applyOne(n); ok {
			events = append(events, ev)
		}
	}
	for _, ev := range events {
		v.metrics.ClusterEvent(ev.Kind.String())
		v.log.Info("member "+ev.Kind.String(), "member", ev.Member.Name, "addr", ev.Member.Addr, "state", ev.Member.State.String(),
			"ready", ev.Member.Ready, "actor_addr", ev.Member.ActorAddr, "led", len(ev.Member.Led), "followed", len(ev.Member.Followed))
		for s := range v.subs {
			s.push(ev)
		}
	}
	if len(events) > 0 {
		v.count()
	}
}

// applyOne applies one note; it returns the event the note made, if any.
// v.mu is held.
func (v *view) applyOne(n note) (Event, bool) {
	e := v.byName[n.name]
	switch n.kind {
	case noteJoin, noteUpdate:
		if e == nil {
			e = &entry{Member: Member{Name: n.name, State: StateDead}}
			v.byName[n.name] = e
		}
		was := e.State
		changed := e.Addr != n.addr || !bytes.Equal(e.raw, n.meta)
		e.Addr = n.addr
		if changed {
			v.setMeta(e, n.meta)
		}
		if was != StateAlive {
			e.State, e.Since = StateAlive, n.at
		}
		switch {
		case was == StateDead || was == StateLeft:
			return Event{Kind: EventJoin, Member: e.snapshot()}, true
		case changed || was != StateAlive:
			return Event{Kind: EventUpdate, Member: e.snapshot()}, true
		}
	case noteGone:
		if e == nil {
			return Event{}, false
		}
		state, kind := StateDead, EventFail
		if e.Leaving {
			state, kind = StateLeft, EventLeave
		}
		if e.State == state {
			return Event{}, false
		}
		e.State, e.Since = state, n.at
		return Event{Kind: kind, Member: e.snapshot()}, true
	case noteSuspect, noteAlive:
		// Only an alive member turns suspect, and only a suspect one turns
		// alive again here: a member dead or left comes back through a join.
		from, to := StateAlive, StateSuspect
		if n.kind == noteAlive {
			from, to = StateSuspect, StateAlive
		}
		if e == nil || n.name == v.self {
			return Event{}, false
		}
		if n.kind == noteSuspect && e.State == StateSuspect {
			e.suspectUntil = n.at.Add(v.suspicion.window(len(v.byName)))
		}
		if e.State != from {
			return Event{}, false
		}
		e.State, e.Since = to, n.at
		if to == StateSuspect {
			e.suspectUntil = n.at.Add(v.suspicion.window(len(v.byName)))
		}
		return Event{Kind: EventUpdate, Member: e.snapshot()}, true
	}
	return Event{}, false
}

// setMeta decodes raw into e's metadata.
func (v *view) setMeta(e *entry, raw []byte) {
	e.raw = raw
	d, err := decodeMeta(raw)
	e.Leaving = d.leaving
	if err == nil && d.partitions != v.partitions {
		err = fmt.Errorf("cluster: member %s has %d partitions, this node %d: the nodes of a cluster must agree on cluster.partitions",
			e.Name, d.partitions, v.partitions)
	}
	if err != nil {
		if e.MetaErr == nil || e.MetaErr.Error() != err.Error() {
			v.log.Warn("cannot read a member's metadata", "member", e.Name, "err", err)
		}
		e.Meta, e.MetaErr = Meta{}, err
		return
	}
	e.Meta, e.MetaErr = d.Meta, nil
}

// snapshot returns a copy of e's member that shares nothing with it.
func (e *entry) snapshot() Member {
	m := e.Member
	m.Meta = m.Meta.clone()
	return m
}

// refresh ends suspicions that lapsed, drops members dead or left for
// longer than forget, and sets the gauges again.
func (v *view) refresh(now time.Time, forget time.Duration, health int) {
	var lapsed []note
	v.mu.Lock()
	for name, e := range v.byName {
		if e.State == StateSuspect && now.After(e.suspectUntil) {
			lapsed = append(lapsed, note{kind: noteAlive, name: name, at: now})
		}
	}
	v.mu.Unlock()
	v.apply(lapsed)
	v.mu.Lock()
	defer v.mu.Unlock()
	for name, e := range v.byName {
		if (e.State == StateDead || e.State == StateLeft) && now.Sub(e.Since) > forget {
			delete(v.byName, name)
			v.log.Info("forgot a member gone since "+e.Since.Format(time.RFC3339), "member", name, "state", e.State.String())
		}
	}
	v.count()
	v.metrics.ClusterHealthScore(health)
}

// count sets the members-by-state gauge. v.mu is held.
func (v *view) count() {
	n := make([]int, len(States))
	for _, e := range v.byName {
		n[e.State]++
	}
	for _, s := range States {
		v.metrics.ClusterMembers(s.String(), n[s])
	}
}

// subscribe adds a subscription; see Membership.Subscribe.
func (v *view) subscribe() (<-chan Event, func()) {
	s := newSubscription()
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		s.end()
		return s.out, func() {}
	}
	v.subs[s] = struct{}{}
	v.mu.Unlock()
	return s.out, func() {
		v.mu.Lock()
		delete(v.subs, s)
		v.mu.Unlock()
		s.end()
	}
}

// close ends every subscription.
func (v *view) close() {
	v.mu.Lock()
	subs := slices.Collect(maps.Keys(v.subs))
	v.subs, v.closed = map[*subscription]struct{}{}, true
	v.mu.Unlock()
	for _, s := range subs {
		s.end()
	}
}
