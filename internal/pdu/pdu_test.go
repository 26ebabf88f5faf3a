package pdu

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// drawn is an event drawn for a test: the fields, the content's text as a
// client might send it (not canonical), and the key to sign with.
type drawn struct {
	e       Event
	v       string
	content *node
	text    []byte
	flaw    *flaw
	keyID   string
	key     ed25519.PrivateKey
}

// event draws an event: a member event half the time, else one of the
// types whose content redaction keeps in part, a redaction, a message or
// a custom state or message event, in any version from 3 to 12.
func (g *gen) event() *drawn {
	vs := Versions()
	d := &drawn{v: vs[g.pick(len(vs))]}
	vn, _ := strconv.Atoi(d.v)
	server := g.serverName()
	user := func() string { return "@" + g.localpart() + ":" + server }
	e := &d.e
	e.Origin = server
	e.Sender = user()
	e.RoomID = g.roomID(d.v, server)
	e.PrevEvents = g.ids(d.v, 3)
	e.AuthEvents = g.ids(d.v, 5)
	e.Depth = [...]int64{1, maxInt, g.r.Int63n(maxInt + 1), g.r.Int63n(1 << 20)}[g.pick(4)]
	e.OriginServerTS = [...]int64{0, maxInt, g.r.Int63n(maxInt + 1), 1_500_000_000_000 + g.r.Int63n(1_000_000_000_000)}[g.pick(4)]
	c := &node{kind: kObject}
	empty := ""
	state := func(k string) { e.StateKey = &k }
	switch k := g.pick(20); {
	case k < 10:
		e.Type = "m.room.member"
		state(user())
		if g.chance(0.8) {
			state(e.Sender)
		}
		c.set("membership", str([...]string{"join", "invite", "leave", "ban", "knock"}[g.pick(5)]))
		c.set("displayname", str(g.text(20, false)))
		c.set("avatar_url", str("mxc://"+server+"/"+g.localpart()))
		if g.chance(0.2) {
			c.set("join_authorised_via_users_server", str(user()))
		}
		if g.chance(0.1) {
			signed := &node{kind: kObject}
			signed.set("mxid", str(*e.StateKey))
			signed.set("token", str(g.localpart()))
			signed.set("signatures", g.object(2, 2))
			tpi := &node{kind: kObject}
			tpi.set("display_name", str(g.text(8, false)))
			tpi.set("signed", signed)
			c.set("third_party_invite", tpi)
		}
	case k == 10:
		e.Type = "m.room.create"
		state(empty)
		if vn < 11 {
			c.set("creator", str(e.Sender))
		}
		c.set("room_version", str(d.v))
		if vn >= 12 {
			e.RoomID = ""
			e.AuthEvents = nil
			c.set("additional_creators", &node{kind: kArray, items: []*node{str(user()), str(user())}})
		}
	case k == 11:
		e.Type = "m.room.join_rules"
		state(empty)
		c.set("join_rule", str([...]string{"public", "invite", "restricted", "knock"}[g.pick(4)]))
		allow := &node{kind: kObject}
		allow.set("type", str("m.room_membership"))
		allow.set("room_id", str(g.roomID(d.v, server)))
		c.set("allow", &node{kind: kArray, items: []*node{allow}})
	case k == 12:
		e.Type = "m.room.power_levels"
		state(empty)
		for _, key := range []string{"ban", "events_default", "invite", "kick", "redact", "state_default", "users_default"} {
			c.set(key, integer(g.integer()))
		}
		users := &node{kind: kObject}
		users.set(e.Sender, integer(g.integer()))
		users.set(user(), integer(g.integer()))
		c.set("users", users)
		events := &node{kind: kObject}
		events.set("m.room.name", integer(g.integer()))
		c.set("events", events)
		c.set("notifications", g.object(1, 2))
	case k == 13:
		e.Type = "m.room.history_visibility"
		state(empty)
		c.set("history_visibility", str([...]string{"shared", "joined", "invited", "world_readable"}[g.pick(4)]))
	case k == 14:
		e.Type = "m.room.aliases"
		state(server)
		c.set("aliases", &node{kind: kArray, items: []*node{str("#" + g.localpart() + ":" + server)}})
	case k == 15:
		e.Type = "m.room.redaction"
		e.Redacts = g.eventID(d.v)
		c.set("reason", str(g.text(20, false)))
	case k == 16:
		e.Type = "m.room.message"
		c.set("msgtype", str("m.text"))
		c.set("body", str(g.text(40, false)))
	case k == 17:
		e.Type = g.text(10, false)
		state(g.text(10, false))
	default:
		e.Type = g.text(10, false)
	}
	if e.Type != "m.room.redaction" && g.chance(0.05) {
		e.Redacts = g.eventID(d.v)
	}
	for range g.pick(4) {
		c.set(g.text(8, true), g.value(3))
	}
	d.content = c
	if g.chance(0.1) {
		text, f := g.flawed(c)
		d.text, d.flaw = text, &f
	} else {
		d.text = g.write(nil, c)
	}
	seed := make([]byte, ed25519.SeedSize)
	g.r.Read(seed)
	d.key = ed25519.NewKeyFromSeed(seed)
	d.keyID = "ed25519:" + g.localpart()
	return d
}

// build builds d with gomatrixserverlib and returns the event's ID and
// JSON.
func (d *drawn) build(g *gen) (string, []byte, error) {
	ev, err := d.glib(g)
	if err != nil {
		return "", nil, err
	}
	return ev.EventID(), ev.JSON(), nil
}

// glib builds d with gomatrixserverlib's EventBuilder: the same fields,
// the content as drawn (with redacts in it from version 11).
func (d *drawn) glib(g *gen) (gomatrixserverlib.PDU, error) {
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(d.v))
	eb := verImpl.NewEventBuilder()
	eb.SenderID = d.e.Sender
	eb.RoomID = d.e.RoomID
	eb.Type = d.e.Type
	eb.StateKey = d.e.StateKey
	eb.Depth = d.e.Depth
	eb.PrevEvents = append([]string{}, d.e.PrevEvents...)
	eb.AuthEvents = append([]string{}, d.e.AuthEvents...)
	eb.Content = d.text
	if d.e.Redacts != "" {
		if rulesFor(d.v).redactsInContent {
			eb.Content = d.withRedacts(g)
		} else {
			eb.Redacts = d.e.Redacts
		}
	}
	return eb.Build(time.UnixMilli(d.e.OriginServerTS), spec.ServerName(d.e.Origin), gomatrixserverlib.KeyID(d.keyID), d.key)
}

// withRedacts returns the content's text with the member "redacts" put
// in first.
func (d *drawn) withRedacts(g *gen) []byte {
	if d.flaw == nil && len(d.content.keys) == 0 {
		return append(append([]byte(`{"redacts":`), g.writeString(nil, d.e.Redacts)...), '}')
	}
	if d.text[0] != '{' {
		return d.text
	}
	member := append(append(g.writeString(nil, "redacts"), ':'), g.writeString(nil, d.e.Redacts)...)
	return append(append(append([]byte{'{'}, member...), ','), d.text[1:]...)
}

// TestEventsMatchGomatrixserverlib draws events of every kind and version
// and checks that Hash's event ID and JSON's bytes are the ones
// gomatrixserverlib's EventBuilder.Build gives for the same fields, and
// that contents with a flaw are refused (by both, where the library
// refuses them).
func TestEventsMatchGomatrixserverlib(t *testing.T) {
	t.Parallel()
	const cases = 3000
	t.Logf("seed %d (-pdu.seed)", *seed)
	g := newGen(*seed)
	flawed := 0
	for i := range cases {
		d := g.event()
		canon, err := Canonical(d.text)
		if d.flaw != nil {
			flawed++
			checkFlawRefused(t, g, d, err)
			continue
		}
		if err != nil {
			t.Fatalf("case %d: Canonical(%q): %v", i, d.text, err)
		}
		d.e.Content = canon
		h, err := Hash(&d.e, d.v)
		if err != nil {
			t.Fatalf("case %d: Hash: %v", i, err)
		}
		got, err := JSON(&d.e, d.v, h, d.keyID, d.key)
		if err != nil {
			t.Fatalf("case %d: JSON: %v", i, err)
		}
		wantID, want, err := d.build(g)
		if err != nil {
			t.Fatalf("case %d: gomatrixserverlib refuses %+v (content %q): %v", i, d.e, d.text, err)
		}
		if h.EventID != wantID {
			t.Errorf("case %d (v%s %s): event ID %s, gomatrixserverlib %s", i, d.v, d.e.Type, h.EventID, wantID)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("case %d (v%s %s):\n got  %s\n want %s", i, d.v, d.e.Type, got, want)
		}
		checkUnsigned(t, &d.e, d.v, h, want)
	}
	t.Logf("%d events, %d flawed contents", cases, flawed)
}

// checkFlawRefused checks that Canonical refused d's flawed content and
// that gomatrixserverlib refuses it too in the versions where it does.
func checkFlawRefused(t *testing.T, g *gen, d *drawn, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("Canonical accepts %q, which has a %s", d.text, d.flaw.name)
	}
	vn, _ := strconv.Atoi(d.v)
	if d.flaw.glibRefusesFrom == 0 || vn < d.flaw.glibRefusesFrom {
		return
	}
	if _, _, err := d.build(g); err == nil {
		t.Fatalf("gomatrixserverlib builds v%s content %q with a %s", d.v, d.text, d.flaw.name)
	}
}

// checkUnsigned checks that JSON without a key writes the PDU signed
// minus its signatures.
func checkUnsigned(t *testing.T, e *Event, v string, h Hashes, signed []byte) {
	t.Helper()
	got, err := JSON(e, v, h, "", nil)
	if err != nil {
		t.Fatalf("JSON unsigned: %v", err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(signed, &fields); err != nil {
		t.Fatal(err)
	}
	delete(fields, "signatures")
	b, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	want, err := gomatrixserverlib.CanonicalJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("unsigned:\n got  %s\n want %s", got, want)
	}
}

// TestVersionsBuiltAreTheLibrarysStableOnesFrom3 checks that Versions
// names every stable version gomatrixserverlib knows but 1 and 2, and
// that Hash refuses the others.
func TestVersionsBuiltAreTheLibrarysStableOnesFrom3(t *testing.T) {
	t.Parallel()
	var stable []string
	for v := range gomatrixserverlib.StableRoomVersions() {
		if _, err := strconv.Atoi(string(v)); err == nil && v != "1" && v != "2" {
			stable = append(stable, string(v))
		}
	}
	got := Versions()
	slices.Sort(stable)
	want := slices.Clone(got)
	slices.Sort(want)
	if !slices.Equal(want, stable) {
		t.Errorf("Versions() = %v, gomatrixserverlib's stable numbered versions from 3: %v", got, stable)
	}
	g := newGen(*seed)
	d := g.event()
	d.e.Content = []byte("{}")
	for v := range gomatrixserverlib.RoomVersions() {
		if slices.Contains(got, string(v)) {
			continue
		}
		if _, err := Hash(&d.e, string(v)); !errors.Is(err, ErrUnsupportedVersion) {
			t.Errorf("Hash in version %s: %v, want ErrUnsupportedVersion", v, err)
		}
	}
}
