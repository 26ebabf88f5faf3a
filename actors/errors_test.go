package actors

import (
	"errors"
	"testing"
)

func TestErrorIsAGoError(t *testing.T) {
	var err error = notFound(Error_ROOM, "Unknown room.")
	var e *Error
	if !errors.As(err, &e) || e.Kind != Error_NOT_FOUND || e.Subject != Error_ROOM {
		t.Fatalf("errors.As found %v", e)
	}
	for _, tc := range []struct {
		e    *Error
		want string
	}{
		{notFound(Error_ROOM, "Unknown room."), "not_found room: Unknown room."},
		{forbidden("No."), "forbidden: No."},
		{internal("read filter"), "internal: read filter"},
		{unsupported(), "unsupported: Unknown request."},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}
