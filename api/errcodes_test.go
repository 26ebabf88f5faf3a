package api

import (
	"testing"

	"persona/wire"
)

// TestActorErrorsMapToSpecErrcodes covers every kind and subject the actors
// answer with: each gets the status and errcode the spec (or, where it
// names none, Synapse) gives that case.
func TestActorErrorsMapToSpecErrcodes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		kind       wire.Error_Kind
		subject    wire.Error_Subject
		wantStatus int
		wantCode   string
	}{
		{"storage failure", wire.Error_INTERNAL, wire.Error_NONE, 500, "M_UNKNOWN"},
		{"unknown user", wire.Error_NOT_FOUND, wire.Error_USER, 404, "M_NOT_FOUND"},
		{"unknown room", wire.Error_NOT_FOUND, wire.Error_ROOM, 404, "M_NOT_FOUND"},
		{"unknown alias", wire.Error_NOT_FOUND, wire.Error_ALIAS, 404, "M_NOT_FOUND"},
		{"unknown filter", wire.Error_NOT_FOUND, wire.Error_FILTER, 404, "M_NOT_FOUND"},
		{"unknown device", wire.Error_NOT_FOUND, wire.Error_DEVICE, 404, "M_NOT_FOUND"},
		{"unknown event", wire.Error_NOT_FOUND, wire.Error_EVENT, 404, "M_NOT_FOUND"},
		{"not allowed", wire.Error_FORBIDDEN, wire.Error_NONE, 403, "M_FORBIDDEN"},
		{"bad alias request", wire.Error_BAD_VALUE, wire.Error_ALIAS, 400, "M_INVALID_PARAM"},
		{"bad room ID", wire.Error_BAD_VALUE, wire.Error_ROOM, 400, "M_INVALID_PARAM"},
		{"bad profile key", wire.Error_BAD_VALUE, wire.Error_KEY, 400, "M_INVALID_PARAM"},
		{"bad profile value", wire.Error_BAD_VALUE, wire.Error_FIELD, 400, "M_INVALID_PARAM"},
		{"bad pagination token", wire.Error_BAD_VALUE, wire.Error_TOKEN, 400, "M_INVALID_PARAM"},
		{"unknown membership action", wire.Error_BAD_VALUE, wire.Error_MEMBERSHIP, 400, "M_INVALID_PARAM"},
		{"profile value not JSON", wire.Error_MALFORMED, wire.Error_FIELD, 400, "M_BAD_JSON"},
		{"profile not an object", wire.Error_MALFORMED, wire.Error_PROFILE, 400, "M_BAD_JSON"},
		{"bad filter", wire.Error_MALFORMED, wire.Error_FILTER, 400, "M_BAD_JSON"},
		{"bad member content", wire.Error_MALFORMED, wire.Error_MEMBERSHIP, 400, "M_BAD_JSON"},
		{"bad createRoom body", wire.Error_MALFORMED, wire.Error_ROOM, 400, "M_BAD_JSON"},
		{"bad event content", wire.Error_MALFORMED, wire.Error_EVENT, 400, "M_BAD_JSON"},
		{"key name too long", wire.Error_LIMIT_EXCEEDED, wire.Error_KEY, 400, "M_KEY_TOO_LARGE"},
		{"profile too large", wire.Error_LIMIT_EXCEEDED, wire.Error_PROFILE, 400, "M_PROFILE_TOO_LARGE"},
		{"rate limited", wire.Error_LIMIT_EXCEEDED, wire.Error_NONE, 429, "M_LIMIT_EXCEEDED"},
		{"user ID taken", wire.Error_CONFLICT, wire.Error_USER, 400, "M_USER_IN_USE"},
		{"room exists", wire.Error_CONFLICT, wire.Error_ROOM, 400, "M_ROOM_IN_USE"},
		{"alias exists", wire.Error_CONFLICT, wire.Error_ALIAS, 409, "M_UNKNOWN"},
		{"forget while joined", wire.Error_CONFLICT, wire.Error_MEMBERSHIP, 400, "M_UNKNOWN"},
		{"unknown request", wire.Error_UNSUPPORTED, wire.Error_NONE, 400, "M_UNRECOGNIZED"},
		{"busy", wire.Error_UNAVAILABLE, wire.Error_NONE, 503, "M_UNKNOWN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := answer(&wire.Error{Kind: tc.kind, Subject: tc.subject, Message: "why"})
			if e.Status != tc.wantStatus || e.Code != tc.wantCode || e.Message != "why" {
				t.Fatalf("%v %v answered %d %s %q, want %d %s %q", tc.kind, tc.subject,
					e.Status, e.Code, e.Message, tc.wantStatus, tc.wantCode, "why")
			}
		})
	}
}

// TestEveryErrorKindHasAnAnswer checks that no kind falls through to the
// internal error unless it is one, and that a limit's wait reaches the client.
func TestEveryErrorKindHasAnAnswer(t *testing.T) {
	t.Parallel()
	for k := range wire.Error_Kind_name {
		kind := wire.Error_Kind(k)
		if _, ok := errcodes[errorClass{kind, wire.Error_NONE}]; !ok {
			t.Errorf("kind %v has no answer of its own", kind)
		}
		if kind != wire.Error_INTERNAL && kind != wire.Error_UNAVAILABLE && answer(&wire.Error{Kind: kind}).Status >= 500 {
			t.Errorf("kind %v, a client's error, answers %d", kind, answer(&wire.Error{Kind: kind}).Status)
		}
	}
	e := answer(&wire.Error{Kind: wire.Error_LIMIT_EXCEEDED, RetryAfterMs: 1500})
	if e.RetryAfterMs != 1500 {
		t.Fatalf("retry_after_ms %d, want 1500", e.RetryAfterMs)
	}
}
