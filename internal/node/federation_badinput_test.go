package node_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"persona/internal/testnode"
)

// sendResult is a node's answer to a transaction: per PDU, its error.
type sendResult struct {
	PDUs map[string]struct {
		Error string `json:"error"`
	} `json:"pdus"`
}

// txnBody is a transaction's body from origin, holding pdus and edus.
func txnBody(t *testing.T, origin string, pdus []gomatrixserverlib.PDU, edus []gomatrixserverlib.EDU) []byte {
	t.Helper()
	raw := make([]json.RawMessage, len(pdus))
	for i, ev := range pdus {
		raw[i] = ev.JSON()
	}
	b, err := json.Marshal(map[string]any{"origin": origin, "origin_server_ts": time.Now().UnixMilli(), "pdus": raw, "edus": edus})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withContent is ev's JSON with its content replaced, hashes and
// signatures kept: the content hash no longer matches.
func withContent(t *testing.T, ev gomatrixserverlib.PDU, content any) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(ev.JSON(), &m); err != nil {
		t.Fatal(err)
	}
	c, err := json.Marshal(content)
	if err != nil {
		t.Fatal(err)
	}
	m["content"] = c
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// holds reports whether cli's server holds the event id in room.
func holds(ctx context.Context, t *testing.T, cli *mautrix.Client, room id.RoomID, eventID string) bool {
	t.Helper()
	_, err := cli.GetEvent(ctx, room, id.EventID(eventID))
	if errors.Is(err, mautrix.MNotFound) {
		return false
	}
	if err != nil {
		t.Fatalf("event %s: %v", eventID, err)
	}
	return true
}

// TestBadInputOverFederation sends a live node's federation listener what
// no well-behaved server sends, signed (or not) as a second node B whose
// user bob is in a room of A: every request is answered with the spec's
// error, every bad PDU is refused in the transaction's answer, nothing
// refused reaches the room, a replayed txnId gets the first answer and
// applies nothing again, and the node goes on serving.
func TestBadInputOverFederation(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := testnode.Start(t, "", byAddress(t))
	b := testnode.Start(t, "", byAddress(t))
	alice, bob := a.Register("alice"), b.Register("bob")
	room := shareRoom(ctx, t, a, alice, bob)
	tip := b.Tip(t, a, string(room), string(bob.UserID))
	bid := b.Federation().Identity()
	origin := b.Config.ServerName
	_, otherKey, _ := ed25519.GenerateKey(nil)
	forged := bid
	forged.PrivateKey = otherKey
	mallory, carol, bobID, empty := "@mallory:"+origin, "@carol:"+origin, string(bob.UserID), ""
	member := func(name string) map[string]any { return map[string]any{"membership": "join", "displayname": name} }

	// A rename of bob's that A takes, unless a request carrying it is refused.
	rename := tip.Build(t, bid, bobID, "m.room.member", &bobID, member("Bob by hand"))
	send := func(txn string, req testnode.Request) (int, []byte) {
		t.Helper()
		req.Method, req.URI = http.MethodPut, "/_matrix/federation/v1/send/"+txn
		return testnode.DoFederation(t, b.FederationRequest(t, a, req))
	}

	t.Run("refused requests", func(t *testing.T) {
		var many []gomatrixserverlib.PDU
		for i := range 51 {
			many = append(many, tip.Build(t, bid, bobID, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": fmt.Sprint(i)}))
		}
		var edus []gomatrixserverlib.EDU
		for range 101 {
			edus = append(edus, gomatrixserverlib.EDU{Type: "m.typing", Origin: origin, Content: []byte(`{"room_id":"` + string(room) + `","user_id":"` + bobID + `","typing":true}`)})
		}
		good := txnBody(t, origin, []gomatrixserverlib.PDU{rename}, nil)
		for _, tc := range []struct {
			name        string
			req         testnode.Request
			wantStatus  int
			wantErrcode string
			pdus        []gomatrixserverlib.PDU // none may be applied
		}{
			{"unsigned", testnode.Request{Body: good, Unsigned: true}, http.StatusUnauthorized, "M_UNAUTHORIZED", nil},
			{"signed with another key", testnode.Request{Body: good, Key: otherKey}, http.StatusUnauthorized, "M_UNAUTHORIZED", nil},
			{"for another destination", testnode.Request{Body: good, Destination: "127.0.0.1:1"}, http.StatusUnauthorized, "M_UNAUTHORIZED", nil},
			{"malformed JSON", testnode.Request{Body: []byte(`{"pdus": [` + string(rename.JSON()))}, http.StatusBadRequest, "M_NOT_JSON", nil},
			{"not a transaction", testnode.Request{Body: []byte(`{"pdus": {"event": 1}}`)}, http.StatusBadRequest, "M_BAD_JSON", nil},
			{"51 PDUs", testnode.Request{Body: txnBody(t, origin, many, nil)}, http.StatusBadRequest, "M_BAD_JSON", many},
			{"101 EDUs", testnode.Request{Body: txnBody(t, origin, []gomatrixserverlib.PDU{rename}, edus)}, http.StatusBadRequest, "M_BAD_JSON", nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				status, body := send("refused-"+strings.ReplaceAll(tc.name, " ", "-"), tc.req)
				var e struct {
					Errcode string `json:"errcode"`
				}
				if err := json.Unmarshal(body, &e); err != nil || status != tc.wantStatus || e.Errcode != tc.wantErrcode {
					t.Fatalf("got %d %s, want %d %s", status, body, tc.wantStatus, tc.wantErrcode)
				}
				for _, ev := range append(tc.pdus, rename) {
					if holds(ctx, t, alice, room, ev.EventID()) {
						t.Fatalf("A's room holds %s of a refused request", ev.EventID())
					}
				}
			})
		}
	})

	t.Run("refused PDUs", func(t *testing.T) {
		tampered := tip.Build(t, bid, bobID, "m.room.member", &bobID, member("Bob signed"))
		for _, tc := range []struct {
			name, wantError string
			ev              gomatrixserverlib.PDU
			raw             json.RawMessage // the PDU as sent, when not ev's JSON
		}{
			{"bad content hash", "content hash", tampered, withContent(t, tampered, member("Bob tampered"))},
			{"bad signature", "signatures", tip.Build(t, forged, bobID, "m.room.member", &bobID, member("Bob forged")), nil},
			{"a non-member invites", "auth", tip.Build(t, bid, mallory, "m.room.member", &carol, map[string]any{"membership": "invite"}), nil},
			{"a non-member kicks a member", "auth", tip.Build(t, bid, mallory, "m.room.member", &bobID, map[string]any{"membership": "leave"}), nil},
			{"a member joins another user", "auth", tip.Build(t, bid, bobID, "m.room.member", &mallory, map[string]any{"membership": "join"}), nil},
			{"a non-member speaks", "auth", tip.Build(t, bid, mallory, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "hi"}), nil},
			{"power levels without power", "auth", tip.Build(t, bid, bobID, "m.room.power_levels", &empty, map[string]any{"users": map[string]int{bobID: 100}}), nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				raw := tc.raw
				if raw == nil {
					raw = tc.ev.JSON()
				}
				body, err := json.Marshal(map[string]any{"origin": origin, "origin_server_ts": time.Now().UnixMilli(), "pdus": []json.RawMessage{raw}})
				if err != nil {
					t.Fatal(err)
				}
				status, answer := send("pdu-"+strings.ReplaceAll(tc.name, " ", "-"), testnode.Request{Body: body})
				var res sendResult
				if err := json.Unmarshal(answer, &res); err != nil || status != http.StatusOK {
					t.Fatalf("got %d %s, want 200 and the PDU's error", status, answer)
				}
				if got := res.PDUs[tc.ev.EventID()].Error; !strings.Contains(got, tc.wantError) {
					t.Fatalf("answer %s: error of %s is %q, want one about %q", answer, tc.ev.EventID(), got, tc.wantError)
				}
				if holds(ctx, t, alice, room, tc.ev.EventID()) {
					t.Fatalf("A's room holds the refused %s", tc.ev.EventID())
				}
			})
		}
		if got := memberName(ctx, alice, room, bob.UserID); got != "bob" {
			t.Fatalf("after refused renames A names bob %q", got)
		}
	})

	t.Run("replayed txnId", func(t *testing.T) {
		first := txnBody(t, origin, []gomatrixserverlib.PDU{rename}, nil)
		status, answer := send("once", testnode.Request{Body: first})
		var res sendResult
		if err := json.Unmarshal(answer, &res); err != nil || status != http.StatusOK {
			t.Fatalf("good transaction: %d %s", status, answer)
		}
		if r, ok := res.PDUs[rename.EventID()]; !ok || r.Error != "" {
			t.Fatalf("good transaction: %s", answer)
		}
		if got := memberName(ctx, alice, room, bob.UserID); got != "Bob by hand" {
			t.Fatalf("A names bob %q after a good rename", got)
		}
		other := tip.Build(t, bid, bobID, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "once more"})
		for _, body := range [][]byte{first, txnBody(t, origin, []gomatrixserverlib.PDU{rename, other}, nil)} {
			status, again := send("once", testnode.Request{Body: body})
			if status != http.StatusOK || string(again) != string(answer) {
				t.Fatalf("replay: %d %s, want the first answer %s", status, again, answer)
			}
		}
		if holds(ctx, t, alice, room, other.EventID()) {
			t.Fatal("a replayed txnId applied a PDU the first did not carry")
		}
		if got := memberNames(ctx, t, alice, room, bob.UserID); !slices.Equal(got, []string{"bob", "Bob by hand"}) {
			t.Fatalf("A's timeline of bob's member events: %q", got)
		}
	})

	t.Run("replayed at once", func(t *testing.T) {
		// A sender that timed out sends its transaction again while the
		// first is being applied; two servers may relay one PDU at once.
		want := []string{"bob", "Bob by hand"}
		for round := range 6 {
			txn := func(i int) string { return fmt.Sprint("at-once-", round) }
			if round%2 == 1 {
				txn = func(i int) string { return fmt.Sprint("relayed-", round, "-", i) }
			}
			tip := b.Tip(t, a, string(room), bobID)
			name := fmt.Sprint("Bob at once ", round)
			ev := tip.Build(t, bid, bobID, "m.room.member", &bobID, member(name))
			body := txnBody(t, origin, []gomatrixserverlib.PDU{ev}, nil)
			var wg sync.WaitGroup
			answers := make([]string, 16)
			for i := range answers {
				wg.Go(func() {
					status, answer := send(txn(i), testnode.Request{Body: body})
					answers[i] = fmt.Sprint(status, " ", string(answer))
				})
			}
			wg.Wait()
			for _, got := range answers {
				if want := fmt.Sprintf(`200 {"pdus":{%q:{}}}`, ev.EventID()); got != want {
					t.Fatalf("round %d: answer %s, want %s", round, got, want)
				}
			}
			want = append(want, name)
			if got := memberNames(ctx, t, alice, room, bob.UserID); !slices.Equal(got, want) {
				t.Fatalf("round %d: A's timeline of bob's member events: %q, want %q", round, got, want)
			}
			b.Tip(t, a, string(room), bobID) // one forward extremity: the PDU, once
		}
	})

	// The node goes on: it answers a peer and its own client.
	status, body := testnode.DoFederation(t, b.FederationRequest(t, a, testnode.Request{Method: http.MethodGet, URI: "/_matrix/federation/v1/version"}))
	if status != http.StatusOK {
		t.Fatalf("version after the bad input: %d %s", status, body)
	}
	if err := alice.SetDisplayName(ctx, "Alice still"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "A's room to take alice's rename", func() bool { return memberName(ctx, alice, room, alice.UserID) == "Alice still" })
}
