package rooms_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"runtime/pprof"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"persona/config"
	"persona/internal/testnode"
)

// FuzzInboundTransaction sends a live node, as a second node whose user
// is in one of its rooms, arbitrary bodies of PUT /send/{txnId}, signed
// whenever they are JSON: none may panic, hang or be answered with a 5xx,
// and each answer is a transaction's result or a Matrix error. The seeds
// are transactions of real PDUs: the room's own events and a rename built
// as the second node would send it.
//
// Run it with -fuzzminimizetime 0s: the nodes' own goroutines make the
// coverage of one input vary from run to run, so most inputs look new, and
// the engine would spend its minimizing time (a minute) on each.
func FuzzInboundTransaction(f *testing.F) {
	a, b, room, bob := twoServers(f)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	origin := spec.ServerName(b.Config.ServerName)
	bobID := string(bob)
	tip := b.Tip(f, a, room, bobID)
	rename := tip.Build(f, b.Federation().Identity(), bobID, "m.room.member", &bobID, map[string]any{"membership": "join", "displayname": "Bob fuzzed"})
	history, err := b.Federation().Client().Backfill(ctx, origin, spec.ServerName(a.Config.ServerName), room, 20, tip.Prev)
	if err != nil {
		f.Fatalf("backfill: %v", err)
	}
	seed := func(pdus []json.RawMessage, edus []gomatrixserverlib.EDU) {
		t := gomatrixserverlib.Transaction{TransactionID: "seed", Origin: origin, Destination: spec.ServerName(a.Config.ServerName),
			OriginServerTS: spec.AsTimestamp(time.Now()), PDUs: pdus, EDUs: edus}
		body, err := json.Marshal(t)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body)
	}
	typing, _ := json.Marshal(map[string]any{"room_id": room, "user_id": bobID, "typing": true})
	seed([]json.RawMessage{rename.JSON()}, nil)
	seed(history.PDUs, nil)
	seed(history.PDUs[:1], []gomatrixserverlib.EDU{{Type: "m.typing", Origin: string(origin), Content: typing}})
	seed([]json.RawMessage{}, []gomatrixserverlib.EDU{{Type: "m.presence", Origin: string(origin), Content: []byte(`{"push":[]}`)}})
	f.Add([]byte(`{"pdus":[{"room_id":"` + room + `"}],"edus":[{}]}`))
	f.Add([]byte(`{}`))

	var txn atomic.Int64
	h := a.Federation().Handler()
	f.Fuzz(func(t *testing.T, body []byte) {
		req := b.FederationRequest(t, a, testnode.Request{Method: http.MethodPut,
			URI: "/_matrix/federation/v1/send/fuzz-" + strconv.FormatInt(txn.Add(1), 10), Body: body})
		rec := httptest.NewRecorder()
		done := make(chan struct{})
		go func() {
			defer close(done)
			h.ServeHTTP(rec, req)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			var stacks bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&stacks, 2)
			t.Fatalf("no answer after 10 s to %q; goroutines:\n%.65536s", body, stacks.String())
		}
		var answer struct {
			PDUs    map[string]struct{ Error string } `json:"pdus"`
			Errcode string                            `json:"errcode"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &answer); err != nil {
			t.Fatalf("%d %q is no JSON object: %v", rec.Code, rec.Body.Bytes(), err)
		}
		switch {
		case rec.Code >= 500:
			t.Fatalf("%d %s for %q", rec.Code, rec.Body.Bytes(), body)
		case rec.Code == http.StatusOK && answer.PDUs == nil:
			t.Fatalf("200 %s: no pdus", rec.Body.Bytes())
		case rec.Code != http.StatusOK && answer.Errcode == "":
			t.Fatalf("%d %s: no errcode", rec.Code, rec.Body.Bytes())
		}
	})
}

// twoServers starts nodes A and B, named by their federation listeners,
// and has a user of B join a public room of A's user; it returns the
// nodes, the room and B's user.
// tuneA, if given, changes A's config first.
func twoServers(tb testing.TB, tuneA ...func(*config.Config)) (a, b *testnode.Node, room string, bob string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a = testnode.Start(tb, "", func(c *config.Config) {
		testnode.ByAddress(tb)(c)
		for _, tune := range tuneA {
			tune(c)
		}
	})
	b = testnode.Start(tb, "", testnode.ByAddress(tb))
	alice, bobCli := a.Register("alice"), b.Register("bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := bobCli.JoinRoom(ctx, string(created.RoomID), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
		tb.Fatalf("bob joins through B: %v", err)
	}
	for {
		var c event.MemberEventContent
		if alice.StateEvent(ctx, created.RoomID, event.StateMember, string(bobCli.UserID), &c) == nil && c.Membership == event.MembershipJoin {
			return a, b, string(created.RoomID), string(bobCli.UserID)
		}
		if ctx.Err() != nil {
			tb.Fatal("A's room never held bob's join")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
