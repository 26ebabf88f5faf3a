package pdu

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
)

// TestRedactedMatchesGomatrixserverlib draws events of every kind and
// version and checks that Redacted gives, from the event as built and from
// its content as RedactContent keeps it, the event ID of the event built
// by gomatrixserverlib and the bytes its RedactEventJSON keeps of that
// event, in canonical JSON, signed and unsigned.
func TestRedactedMatchesGomatrixserverlib(t *testing.T) {
	t.Parallel()
	const cases = 2000
	t.Logf("seed %d (-pdu.seed)", *seed)
	g := newGen(*seed)
	for i := range cases {
		d := g.event()
		if d.flaw != nil {
			continue
		}
		canon, err := Canonical(d.text)
		if err != nil {
			t.Fatalf("case %d: Canonical(%q): %v", i, d.text, err)
		}
		d.e.Content = canon
		h, err := Hash(&d.e, d.v)
		if err != nil {
			t.Fatalf("case %d: Hash: %v", i, err)
		}
		ev, err := d.glib(g)
		if err != nil {
			t.Fatalf("case %d: gomatrixserverlib refuses %+v: %v", i, d.e, err)
		}
		verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(d.v))
		raw, err := verImpl.RedactEventJSON(ev.JSON())
		if err != nil {
			t.Fatal(err)
		}
		want, err := gomatrixserverlib.CanonicalJSON(raw)
		if err != nil {
			t.Fatal(err)
		}
		kept, err := RedactContent(d.v, d.e.Type, canon)
		if err != nil {
			t.Fatalf("case %d: RedactContent: %v", i, err)
		}
		for _, content := range [][]byte{canon, kept} {
			e := d.e
			e.Content = content
			id, got, err := Redacted(&e, d.v, h.Content, d.keyID, d.key)
			if err != nil {
				t.Fatalf("case %d: Redacted: %v", i, err)
			}
			if id != ev.EventID() {
				t.Errorf("case %d (v%s %s): event ID %s, gomatrixserverlib %s", i, d.v, e.Type, id, ev.EventID())
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("case %d (v%s %s):\n got  %s\n want %s", i, d.v, e.Type, got, want)
			}
			_, unsigned, err := Redacted(&e, d.v, h.Content, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			if wantUnsigned := withoutSignatures(t, want); !bytes.Equal(unsigned, wantUnsigned) {
				t.Fatalf("case %d unsigned:\n got  %s\n want %s", i, unsigned, wantUnsigned)
			}
		}
	}
}

// withoutSignatures is the canonical event minus its signatures.
func withoutSignatures(t *testing.T, event []byte) []byte {
	t.Helper()
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(event, &fields); err != nil {
		t.Fatal(err)
	}
	delete(fields, "signatures")
	b, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	out, err := gomatrixserverlib.CanonicalJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
