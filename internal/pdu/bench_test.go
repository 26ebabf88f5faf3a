package pdu

import (
	"testing"

	"persona/internal/cputime"
)

// renameEvent draws a typical rename: an m.room.member join in room
// version 10 whose content holds a displayname and an avatar_url, with 3
// auth events and 1 prev event.
func renameEvent(g *gen) *drawn {
	d := g.event()
	for d.flaw != nil {
		d = g.event()
	}
	word := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte('a' + g.pick(26))
		}
		return string(b)
	}
	d.v = "10"
	d.e.Type, d.e.StateKey, d.e.Redacts = "m.room.member", new(d.e.Sender), ""
	d.e.RoomID = g.roomID(d.v, d.e.Origin)
	d.e.AuthEvents = []string{g.eventID(d.v), g.eventID(d.v), g.eventID(d.v)}
	d.e.PrevEvents = []string{g.eventID(d.v)}
	d.e.Depth = 1000 + g.r.Int63n(1000)
	d.e.OriginServerTS = 1_500_000_000_000 + g.r.Int63n(1_000_000_000_000)
	d.content = &node{kind: kObject}
	d.content.set("membership", str("join"))
	d.content.set("displayname", str(word(6)+" "+word(8)))
	d.content.set("avatar_url", str("mxc://"+d.e.Origin+"/"+word(24)))
	d.text = g.write(nil, d.content)
	c, err := Canonical(d.text)
	if err != nil {
		panic(err)
	}
	d.e.Content = c
	return d
}

// BenchmarkHashMemberEvent measures Hash on a rename: what a room with
// only local members pays per member event.
func BenchmarkHashMemberEvent(b *testing.B) {
	d := renameEvent(newGen(*seed))
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		if _, err := Hash(&d.e, d.v); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkJSONSigned measures Hash and a signed JSON on a rename: what
// an event leaving the server pays.
func BenchmarkJSONSigned(b *testing.B) {
	d := renameEvent(newGen(*seed))
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		h, err := Hash(&d.e, d.v)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := JSON(&d.e, d.v, h, d.keyID, d.key); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBuilderBuild measures gomatrixserverlib's EventBuilder.Build
// and EventID on the same rename.
func BenchmarkBuilderBuild(b *testing.B) {
	g := newGen(*seed)
	d := renameEvent(g)
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		ev, err := d.glib(g)
		if err != nil {
			b.Fatal(err)
		}
		_ = ev.EventID()
	}
}

// reportCPU starts counting the process's CPU time and returns the
// function that reports it per operation, beside the wall time a busy
// machine inflates.
func reportCPU(b *testing.B) func() {
	cpu0 := cputime.Process()
	return func() {
		b.ReportMetric(float64(cputime.Process()-cpu0)/float64(b.N), "cpu-ns/op")
	}
}
