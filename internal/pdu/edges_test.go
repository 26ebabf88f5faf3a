package pdu

import (
	"bytes"
	"crypto/ed25519"
	"strings"
	"testing"
)

// TestSizeLimitIsTheLibrarys grows a message event's body until its
// signed PDU is 65,536 bytes, then one byte more: JSON writes the first as
// gomatrixserverlib does and refuses the second, as gomatrixserverlib does.
func TestSizeLimitIsTheLibrarys(t *testing.T) {
	t.Parallel()
	g := newGen(*seed)
	for _, v := range Versions() {
		d := g.event()
		for d.e.Type == "m.room.create" || d.e.Redacts != "" {
			d = g.event()
		}
		d.v = v
		d.e.RoomID = g.roomID(v, d.e.Origin)
		d.e.PrevEvents, d.e.AuthEvents = g.ids(v, 3), g.ids(v, 5)
		d.content = &node{kind: kObject}
		size := func(n int) int {
			d.content.keys, d.content.vals = []string{"body"}, []*node{str(strings.Repeat("a", n))}
			d.text = g.write(nil, d.content)
			c, err := Canonical(d.text)
			if err != nil {
				t.Fatal(err)
			}
			d.e.Content = c
			h, err := Hash(&d.e, v)
			if err != nil {
				t.Fatal(err)
			}
			js, err := JSON(&d.e, v, h, d.keyID, d.key)
			if err != nil {
				return -1
			}
			return len(js)
		}
		n := 60000
		n += maxPDUBytes - size(n)
		if got := size(n); got != maxPDUBytes {
			t.Fatalf("v%s: a body of %d bytes makes a PDU of %d bytes, want %d", v, n, got, maxPDUBytes)
		}
		h, _ := Hash(&d.e, v)
		got, _ := JSON(&d.e, v, h, d.keyID, d.key)
		if _, want, err := d.build(g); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("v%s: gomatrixserverlib at the limit: %v, same bytes %v", v, err, bytes.Equal(got, want))
		}
		if got := size(n + 1); got != -1 {
			t.Fatalf("v%s: JSON writes a PDU of %d bytes", v, got)
		}
		if _, _, err := d.build(g); err == nil {
			t.Fatalf("v%s: gomatrixserverlib builds a PDU of %d bytes", v, maxPDUBytes+1)
		}
	}
}

// TestRoomIDForIsTheCreateEventsRoom checks that RoomIDFor gives the room
// ID gomatrixserverlib derives from a version 12 create event.
func TestRoomIDForIsTheCreateEventsRoom(t *testing.T) {
	t.Parallel()
	g := newGen(*seed)
	for range 20 {
		d := g.event()
		for d.flaw != nil {
			d = g.event()
		}
		d.v, d.e.Type, d.e.StateKey = "12", "m.room.create", new("")
		d.e.RoomID, d.e.AuthEvents, d.e.Redacts = "", nil, ""
		var err error
		if d.e.Content, err = Canonical(d.text); err != nil {
			t.Fatal(err)
		}
		h, err := Hash(&d.e, d.v)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := d.glib(g)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := RoomIDFor(h.EventID), ev.RoomID().String(); got != want {
			t.Fatalf("RoomIDFor(%s) = %s, gomatrixserverlib %s", h.EventID, got, want)
		}
	}
	if got := RoomIDFor("!notanevent"); got != "" {
		t.Errorf(`RoomIDFor("!notanevent") = %q, want ""`, got)
	}
}

// TestHashRefusesWhatItCannotBuild changes one field of drawn events to
// something Hash or JSON must refuse, and checks that gomatrixserverlib
// refuses it too where it does.
func TestHashRefusesWhatItCannotBuild(t *testing.T) {
	t.Parallel()
	g := newGen(*seed)
	cases := []struct {
		name     string
		v        string
		change   func(d *drawn)
		glibToo  bool
		jsonOnly bool
	}{
		{"create event of v12 with a room ID", "12", func(d *drawn) {
			d.e.Type, d.e.StateKey = "m.room.create", new(string)
			d.e.RoomID = g.roomID("12", d.e.Origin)
		}, true, false},
		{"event without a room ID", "10", func(d *drawn) { d.e.RoomID = "" }, true, false},
		{"depth beyond 2^53-1", "10", func(d *drawn) { d.e.Depth = maxInt + 1 + g.r.Int63n(1000) }, true, false},
		{"timestamp beyond 2^53-1", "10", func(d *drawn) { d.e.OriginServerTS = maxInt + 1 + g.r.Int63n(1000) }, true, false},
		{"sender not UTF-8", "10", func(d *drawn) { d.e.Sender += "\xff" }, false, false},
		{"state key not UTF-8", "11", func(d *drawn) { d.e.StateKey = new(*d.e.StateKey + "\xc3") }, false, false},
		{"redacts twice in v11", "11", func(d *drawn) {
			d.e.Type, d.e.StateKey, d.e.Redacts = "m.room.redaction", nil, g.eventID("11")
			d.content.set("redacts", str(g.eventID("11")))
			d.text = g.write(nil, d.content)
		}, false, false},
		{"signing key of the wrong size", "10", func(d *drawn) { d.key = d.key[:ed25519.SeedSize] }, false, true},
	}
	for _, c := range cases {
		d := g.event()
		for d.flaw != nil || d.e.StateKey == nil || d.e.Type == "m.room.create" {
			d = g.event()
		}
		d.v = c.v
		d.e.RoomID = g.roomID(c.v, d.e.Origin)
		d.e.PrevEvents, d.e.AuthEvents = g.ids(c.v, 3), g.ids(c.v, 5)
		d.e.Redacts = ""
		c.change(d)
		var err error
		if d.e.Content, err = Canonical(d.text); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		h, err := Hash(&d.e, d.v)
		if c.jsonOnly {
			if err != nil {
				t.Fatalf("%s: Hash: %v", c.name, err)
			}
			_, err = JSON(&d.e, d.v, h, d.keyID, d.key)
		}
		if err == nil {
			t.Errorf("%s: built", c.name)
			continue
		}
		if c.glibToo {
			if _, err := d.glib(g); err == nil {
				t.Errorf("%s: gomatrixserverlib builds it", c.name)
			}
		}
	}
}
