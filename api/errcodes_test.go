package api

import (
	"testing"

	"persona/actors"
)

// TestActorErrorsMapToSpecErrcodes covers every kind and subject the actors
// answer with: each gets the status and errcode the spec (or, where it
// names none, Synapse) gives that case.
func TestActorErrorsMapToSpecErrcodes(t *testing.T) {
	for _, tc := range []struct {
		name       string
		kind       actors.Error_Kind
		subject    actors.Error_Subject
		wantStatus int
		wantCode   string
	}{
		{"storage failure", actors.Error_INTERNAL, actors.Error_NONE, 500, "M_UNKNOWN"},
		{"unknown user", actors.Error_NOT_FOUND, actors.Error_USER, 404, "M_NOT_FOUND"},
		{"unknown room", actors.Error_NOT_FOUND, actors.Error_ROOM, 404, "M_NOT_FOUND"},
		{"unknown alias", actors.Error_NOT_FOUND, actors.Error_ALIAS, 404, "M_NOT_FOUND"},
		{"unknown filter", actors.Error_NOT_FOUND, actors.Error_FILTER, 404, "M_NOT_FOUND"},
		{"unknown device", actors.Error_NOT_FOUND, actors.Error_DEVICE, 404, "M_NOT_FOUND"},
		{"unknown event", actors.Error_NOT_FOUND, actors.Error_EVENT, 404, "M_NOT_FOUND"},
		{"not allowed", actors.Error_FORBIDDEN, actors.Error_NONE, 403, "M_FORBIDDEN"},
		{"bad alias request", actors.Error_BAD_VALUE, actors.Error_ALIAS, 400, "M_INVALID_PARAM"},
		{"bad room ID", actors.Error_BAD_VALUE, actors.Error_ROOM, 400, "M_INVALID_PARAM"},
		{"bad profile key", actors.Error_BAD_VALUE, actors.Error_KEY, 400, "M_INVALID_PARAM"},
		{"bad profile value", actors.Error_BAD_VALUE, actors.Error_FIELD, 400, "M_INVALID_PARAM"},
		{"bad pagination token", actors.Error_BAD_VALUE, actors.Error_TOKEN, 400, "M_INVALID_PARAM"},
		{"unknown membership action", actors.Error_BAD_VALUE, actors.Error_MEMBERSHIP, 400, "M_INVALID_PARAM"},
		{"profile value not JSON", actors.Error_MALFORMED, actors.Error_FIELD, 400, "M_BAD_JSON"},
		{"profile not an object", actors.Error_MALFORMED, actors.Error_PROFILE, 400, "M_BAD_JSON"},
		{"bad filter", actors.Error_MALFORMED, actors.Error_FILTER, 400, "M_BAD_JSON"},
		{"bad member content", actors.Error_MALFORMED, actors.Error_MEMBERSHIP, 400, "M_BAD_JSON"},
		{"bad createRoom body", actors.Error_MALFORMED, actors.Error_ROOM, 400, "M_BAD_JSON"},
		{"bad event content", actors.Error_MALFORMED, actors.Error_EVENT, 400, "M_BAD_JSON"},
		{"key name too long", actors.Error_LIMIT_EXCEEDED, actors.Error_KEY, 400, "M_KEY_TOO_LARGE"},
		{"profile too large", actors.Error_LIMIT_EXCEEDED, actors.Error_PROFILE, 400, "M_PROFILE_TOO_LARGE"},
		{"rate limited", actors.Error_LIMIT_EXCEEDED, actors.Error_NONE, 429, "M_LIMIT_EXCEEDED"},
		{"user ID taken", actors.Error_CONFLICT, actors.Error_USER, 400, "M_USER_IN_USE"},
		{"room exists", actors.Error_CONFLICT, actors.Error_ROOM, 400, "M_ROOM_IN_USE"},
		{"alias exists", actors.Error_CONFLICT, actors.Error_ALIAS, 409, "M_UNKNOWN"},
		{"forget while joined", actors.Error_CONFLICT, actors.Error_MEMBERSHIP, 400, "M_UNKNOWN"},
		{"unknown request", actors.Error_UNSUPPORTED, actors.Error_NONE, 400, "M_UNRECOGNIZED"},
		{"busy", actors.Error_UNAVAILABLE, actors.Error_NONE, 503, "M_UNKNOWN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := answer(&actors.Error{Kind: tc.kind, Subject: tc.subject, Message: "why"})
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
	for k := range actors.Error_Kind_name {
		kind := actors.Error_Kind(k)
		if _, ok := errcodes[errorClass{kind, actors.Error_NONE}]; !ok {
			t.Errorf("kind %v has no answer of its own", kind)
		}
		if kind != actors.Error_INTERNAL && kind != actors.Error_UNAVAILABLE && answer(&actors.Error{Kind: kind}).Status >= 500 {
			t.Errorf("kind %v, a client's error, answers %d", kind, answer(&actors.Error{Kind: kind}).Status)
		}
	}
	e := answer(&actors.Error{Kind: actors.Error_LIMIT_EXCEEDED, RetryAfterMs: 1500})
	if e.RetryAfterMs != 1500 {
		t.Fatalf("retry_after_ms %d, want 1500", e.RetryAfterMs)
	}
}
