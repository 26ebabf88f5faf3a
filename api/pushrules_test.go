package api_test

import (
	"context"
	"net/url"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"

	"persona/internal/testnode"
)

// twoMembers is a room of two members where the user is called "Alice".
type twoMembers struct{}

func (twoMembers) GetOwnDisplayname() string { return "Alice" }
func (twoMembers) GetMemberCount() int       { return 2 }

// TestDefaultPushRules: a user reads the spec's server-default push rules,
// made for them, through mautrix's client, and they decide as the spec
// says; one rule, its enabled flag and its actions read alone.
func TestDefaultPushRules(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", nil)
	ctx := context.Background()
	alice := n.Register("alice")
	rules, err := alice.GetPushRules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rules.Override) != 12 || len(rules.Content) != 1 || len(rules.Underride) != 5 {
		t.Fatalf("%d override, %d content, %d underride rules; want the spec's 12, 1, 5", len(rules.Override), len(rules.Content), len(rules.Underride))
	}
	if r := rules.Override[0]; r.RuleID != ".m.rule.master" || r.Enabled {
		t.Errorf("first override rule %s enabled %v, want .m.rule.master, disabled", r.RuleID, r.Enabled)
	}
	if p := rules.Content[0].Pattern; p != "alice" {
		t.Errorf(".m.rule.contains_user_name pattern %q, want the localpart", p)
	}

	bob := id.NewUserID("bob", testnode.ServerName)
	msg := func(typ event.Type, content map[string]any, stateKey *string) *event.Event {
		evt := &event.Event{Type: typ, Sender: bob, RoomID: "!r:" + testnode.ServerName, StateKey: stateKey, Content: event.Content{Raw: content}}
		if stateKey != nil {
			evt.Type.Class = event.StateEventType
		}
		return evt
	}
	me := string(alice.UserID)
	for _, c := range []struct {
		name string
		evt  *event.Event
		rule string
	}{
		{"a message in a room of two", msg(event.EventMessage, map[string]any{"msgtype": "m.text", "body": "hi"}, nil), ".m.rule.room_one_to_one"},
		{"a notice", msg(event.EventMessage, map[string]any{"msgtype": "m.notice", "body": "hi"}, nil), ".m.rule.suppress_notices"},
		{"a mention", msg(event.EventMessage, map[string]any{"msgtype": "m.text", "body": "hey", "m.mentions": map[string]any{"user_ids": []any{me}}}, nil), ".m.rule.is_user_mention"},
		{"the display name", msg(event.EventMessage, map[string]any{"msgtype": "m.text", "body": "hi Alice"}, nil), ".m.rule.contains_display_name"},
		{"an invite for the user", msg(event.StateMember, map[string]any{"membership": "invite"}, &me), ".m.rule.invite_for_me"},
		{"an edit", msg(event.EventMessage, map[string]any{"msgtype": "m.text", "body": "x", "m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": "$e"}}, nil), ".m.rule.suppress_edits"},
	} {
		if r := rules.GetMatchingRule(twoMembers{}, c.evt); r == nil || r.RuleID != c.rule {
			t.Errorf("%s matches %v, want %s", c.name, r, c.rule)
		}
	}

	r, err := alice.GetPushRule(ctx, "global", pushrules.OverrideRule, ".m.rule.invite_for_me")
	if err != nil || r.RuleID != ".m.rule.invite_for_me" || r.Conditions[2].Pattern != me {
		t.Fatalf("one rule: %+v, %v", r, err)
	}
	base := n.URL + "/_matrix/client/v3/pushrules/global/"
	for path, want := range map[string]string{
		"override/.m.rule.master/enabled": "enabled",
		"underride/.m.rule.call/actions":  "actions",
	} {
		if status, body := dirDo(t, "GET", base+path, alice.AccessToken, ""); status != 200 || body[want] == nil {
			t.Errorf("GET %s: %d %v", path, status, body)
		}
	}
	for path, want := range map[string]struct {
		status int
		code   string
	}{
		"override/" + url.PathEscape(".m.rule.nothing"): {404, "M_NOT_FOUND"},
		"sideways/.m.rule.master":                       {400, "M_INVALID_PARAM"},
	} {
		if status, body := dirDo(t, "GET", base+path, alice.AccessToken, ""); status != want.status || body["errcode"] != want.code {
			t.Errorf("GET %s: %d %v, want %d %s", path, status, body, want.status, want.code)
		}
	}
	if status, body := dirDo(t, "GET", n.URL+"/_matrix/client/v3/pushrules/", "", ""); status != 401 || body["errcode"] != "M_MISSING_TOKEN" {
		t.Errorf("anonymous read: %d %v, want 401 M_MISSING_TOKEN", status, body)
	}
}
