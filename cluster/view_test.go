package cluster

import (
	"log/slog"
	"testing"
	"time"
)

// TestViewStates feeds the view what memberlist tells and checks the
// state of the member and the event each note makes.
func TestViewStates(t *testing.T) {
	t.Parallel()
	v := newView("self", 8, suspicion{mult: 4, maxMult: 6, probe: time.Second}, nil, slog.New(slog.DiscardHandler))
	events, cancel := v.subscribe()
	defer cancel()
	meta := func(m Meta, leaving bool) []byte {
		b, err := encodeMeta(m, 8, leaving)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ready := meta(Meta{ActorAddr: "10.0.0.2:8090", Ready: true, Led: []int{2}}, false)
	notReady := meta(Meta{ActorAddr: "10.0.0.2:8090"}, false)
	at := time.Unix(1000, 0)
	steps := []struct {
		name  string
		note  note
		state State
		event string // "" for none
	}{
		{"joins", note{kind: noteJoin, name: "b", addr: "10.0.0.2:7946", meta: notReady}, StateAlive, "join"},
		{"the same again", note{kind: noteJoin, name: "b", addr: "10.0.0.2:7946", meta: notReady}, StateAlive, ""},
		{"ready", note{kind: noteUpdate, name: "b", addr: "10.0.0.2:7946", meta: ready}, StateAlive, "update"},
		{"an alive message while alive", note{kind: noteAlive, name: "b"}, StateAlive, ""},
		{"suspected", note{kind: noteSuspect, name: "b"}, StateSuspect, "update"},
		{"suspected again", note{kind: noteSuspect, name: "b"}, StateSuspect, ""},
		{"refutes", note{kind: noteAlive, name: "b"}, StateAlive, "update"},
		{"suspected anew", note{kind: noteSuspect, name: "b"}, StateSuspect, "update"},
		{"declared dead", note{kind: noteGone, name: "b"}, StateDead, "fail"},
		{"an old alive message", note{kind: noteAlive, name: "b"}, StateDead, ""},
		{"suspected when dead", note{kind: noteSuspect, name: "b"}, StateDead, ""},
		{"dead again", note{kind: noteGone, name: "b"}, StateDead, ""},
		{"comes back", note{kind: noteJoin, name: "b", addr: "10.0.0.2:7946", meta: ready}, StateAlive, "join"},
		{"announces it leaves", note{kind: noteUpdate, name: "b", addr: "10.0.0.2:7946", meta: meta(Meta{ActorAddr: "10.0.0.2:8090"}, true)}, StateAlive, "update"},
		{"gone after that", note{kind: noteGone, name: "b"}, StateLeft, "leave"},
		{"back at another address", note{kind: noteJoin, name: "b", addr: "10.0.0.9:7946", meta: ready}, StateAlive, "join"},
	}
	for _, s := range steps {
		s.note.at = at
		at = at.Add(time.Second)
		v.apply([]note{s.note})
		ms := v.members()
		if len(ms) != 1 || ms[0].State != s.state {
			t.Fatalf("%s: members %+v, want b %s", s.name, ms, s.state)
		}
		select {
		case ev := <-events:
			if ev.Kind.String() != s.event || ev.Member.State != s.state {
				t.Fatalf("%s: event %s %+v, want %q with b %s", s.name, ev.Kind, ev.Member, s.event, s.state)
			}
		case <-time.After(100 * time.Millisecond):
			if s.event != "" {
				t.Fatalf("%s: no event, want %s", s.name, s.event)
			}
		}
	}
	if m := v.members()[0]; m.Addr != "10.0.0.9:7946" || !m.Ready || m.Leaving || m.Since != at.Add(-time.Second) {
		t.Fatalf("b at the end: %+v", m)
	}

	v.apply([]note{{kind: noteJoin, name: "c", addr: "10.0.0.3:7946", meta: []byte{9}, at: at}})
	if c := v.members()[1]; c.Name != "c" || c.MetaErr == nil || c.State != StateAlive {
		t.Fatalf("c with metadata it cannot read: %+v", c)
	}
	v.apply([]note{{kind: noteJoin, name: "d", addr: "10.0.0.4:7946", meta: meta(Meta{}, false)[:2], at: at}})
	other, err := encodeMeta(Meta{}, 16, false)
	if err != nil {
		t.Fatal(err)
	}
	v.apply([]note{{kind: noteUpdate, name: "c", addr: "10.0.0.3:7946", meta: other, at: at}})
	if c := v.members()[1]; c.MetaErr == nil {
		t.Fatalf("c with 16 partitions among nodes of 8: %+v", c)
	}

	v.apply([]note{{kind: noteGone, name: "b", at: at}, {kind: noteGone, name: "c", at: at.Add(time.Hour)}})
	v.refresh(at.Add(30*time.Minute), 10*time.Minute, 0)
	if ms := v.members(); len(ms) != 2 || ms[0].Name != "c" || ms[1].Name != "d" {
		t.Fatalf("after forgetting members gone 10 minutes: %+v, want c (gone since) and d", ms)
	}
}

// TestSuspicionLapses: a suspicion read from memberlist's log that neither
// a death nor a refute ends lapses once memberlist could no longer hold
// it, and each new failed probe holds it again from then.
func TestSuspicionLapses(t *testing.T) {
	t.Parallel()
	s := suspicion{mult: 4, maxMult: 6, probe: time.Second}
	for n, want := range map[int]time.Duration{1: 5 * time.Second, 3: 5 * time.Second, 10: 25 * time.Second, 100: 49 * time.Second} {
		if got := s.window(n); got != want {
			t.Errorf("window(%d) = %s, want %s", n, got, want)
		}
	}
	v := newView("self", 8, s, nil, slog.New(slog.DiscardHandler))
	at := time.Unix(1000, 0)
	v.apply([]note{{kind: noteJoin, name: "self", at: at}, {kind: noteJoin, name: "b", at: at}, {kind: noteJoin, name: "c", at: at}})
	state := func() State { return v.members()[0].State }
	v.apply([]note{{kind: noteSuspect, name: "b", at: at}})
	v.refresh(at.Add(4*time.Second), time.Hour, 0)
	v.apply([]note{{kind: noteSuspect, name: "b", at: at.Add(4 * time.Second)}})
	v.refresh(at.Add(8*time.Second), time.Hour, 0)
	if state() != StateSuspect {
		t.Fatalf("b %s 4 s into a suspicion renewed at 4 s, want suspect", state())
	}
	v.refresh(at.Add(9*time.Second+time.Millisecond), time.Hour, 0)
	if state() != StateAlive {
		t.Fatalf("b %s once the suspicion lapsed, want alive", state())
	}
}
