package api_test

import (
	"context"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"persona/internal/testnode"
)

// PUT /rooms/{roomId}/redact/{eventId}/{txnId} end to end with mautrix-go:
// who may redact what, the spec's errors, transaction idempotency, and a
// redacted event as clients then read it in /event, /messages, /context
// and /sync, with its redaction.
func TestRedactEvent(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", nil)
	alice, bob, carol := n.Register("alice"), n.Register("bob"), n.Register("carol")
	ctx := context.Background()
	room := createRoom(t, alice, bob)
	secret, err := bob.SendText(ctx, room, "bob's secret")
	if err != nil {
		t.Fatal(err)
	}
	hers, err := alice.SendText(ctx, room, "alice's")
	if err != nil {
		t.Fatal(err)
	}
	before, err := bob.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}

	_, err = bob.RedactEvent(ctx, room, hers.EventID)
	wantErr(t, err, 403, "M_FORBIDDEN")
	_, err = carol.RedactEvent(ctx, room, secret.EventID)
	wantErr(t, err, 403, "M_FORBIDDEN")
	_, err = bob.RedactEvent(ctx, id.RoomID("!nowhere:"+testnode.ServerName), secret.EventID)
	wantErr(t, err, 403, "M_FORBIDDEN")
	_, err = bob.RedactEvent(ctx, room, "$unknown")
	wantErr(t, err, 404, "M_NOT_FOUND")
	base := n.URL + "/_matrix/client/v3/rooms/" + url.PathEscape(string(room)) + "/redact/"
	for _, tc := range []struct {
		name, event, body string
		wantStatus        int
	}{
		{"reason not a string", string(secret.EventID), `{"reason":5}`, 400},
		{"not an event id", "abc", `{}`, 400},
		{"body not an object", string(secret.EventID), `[]`, 400},
	} {
		if status, raw := doRaw(t, "PUT", base+url.PathEscape(tc.event)+"/bad-"+tc.name, bob.AccessToken, tc.body); status != tc.wantStatus {
			t.Errorf("%s: %d %s, want %d", tc.name, status, raw, tc.wantStatus)
		}
	}

	redaction, err := bob.RedactEvent(ctx, room, secret.EventID, mautrix.ReqRedact{Reason: "oops", TxnID: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := bob.RedactEvent(ctx, room, secret.EventID, mautrix.ReqRedact{Reason: "oops", TxnID: "r1"})
	if err != nil || again.EventID != redaction.EventID {
		t.Fatalf("the same transaction again: %v %v, want %s", again, err, redaction.EventID)
	}
	if status, raw := doRaw(t, "PUT", base+url.PathEscape(string(hers.EventID))+"/empty", alice.AccessToken, ``); status != 200 {
		t.Fatalf("a moderator's redaction with an empty body: %d %s", status, raw)
	}

	wantRedacted := func(where string, ev *event.Event) {
		t.Helper()
		if len(ev.Content.Raw) != 0 || ev.Unsigned.RedactedBecause == nil || ev.Unsigned.RedactedBecause.ID != redaction.EventID {
			t.Fatalf("%s: %s reads %v, redacted_because %+v", where, ev.ID, ev.Content.Raw, ev.Unsigned.RedactedBecause)
		}
	}
	got, err := alice.GetEvent(ctx, room, secret.EventID)
	if err != nil {
		t.Fatal(err)
	}
	wantRedacted("/event", got)
	if got.Unsigned.RedactedBecause.Redacts != secret.EventID {
		t.Fatalf("redacted_because names %s", got.Unsigned.RedactedBecause.Redacts)
	}
	msgs, err := alice.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 10)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range msgs.Chunk {
		switch ev.ID {
		case secret.EventID:
			wantRedacted("/messages", ev)
			found = true
		case redaction.EventID:
			_ = ev.Content.ParseRaw(ev.Type)
			if ev.Redacts != secret.EventID || ev.Content.AsRedaction().Redacts != secret.EventID || ev.Content.AsRedaction().Reason != "oops" {
				t.Fatalf("/messages: the redaction reads %+v %s", ev, ev.Content.VeryRaw)
			}
		}
	}
	if !found {
		t.Fatal("/messages lacks the redacted event")
	}
	around, err := alice.Context(ctx, room, hers.EventID, nil, 4)
	if err != nil || len(around.EventsBefore) == 0 || around.EventsBefore[0].ID != secret.EventID {
		t.Fatalf("/context around alice's event: %+v %v", around, err)
	}
	wantRedacted("/context", around.EventsBefore[0])

	after, err := bob.SyncRequest(ctx, 0, before.NextBatch, "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	var seen []id.EventID
	for _, ev := range after.Rooms.Join[room].Timeline.Events {
		if ev.Type == event.EventRedaction {
			seen = append(seen, ev.Redacts)
		}
	}
	if len(seen) != 2 || seen[0] != secret.EventID || seen[1] != hers.EventID {
		t.Fatalf("the incremental sync's redactions redact %v, want %s and %s", seen, secret.EventID, hers.EventID)
	}
	initial, err := carol.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := carol.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	joined, err := carol.SyncRequest(ctx, 0, initial.NextBatch, "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	found = false
	for _, ev := range joined.Rooms.Join[room].Timeline.Events {
		if ev.ID == secret.EventID {
			wantRedacted("/sync", ev)
			found = true
		}
	}
	if !found {
		t.Fatal("the joining user's sync lacks the redacted event")
	}
}
