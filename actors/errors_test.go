package actors

import (
	"errors"
	"testing"

	"persona/wire"
)

func TestErrorIsAGoError(t *testing.T) {
	t.Parallel()
	var err error = notFound(wire.Error_ROOM, "Unknown room.")
	var e *wire.Error
	if !errors.As(err, &e) || e.Kind != wire.Error_NOT_FOUND || e.Subject != wire.Error_ROOM {
		t.Fatalf("errors.As found %v", e)
	}
	for _, tc := range []struct {
		e    *wire.Error
		want string
	}{
		{notFound(wire.Error_ROOM, "Unknown room."), "not_found room: Unknown room."},
		{forbidden("No."), "forbidden: No."},
		{internal("read filter"), "internal: read filter"},
		{unsupported(), "unsupported: Unknown request."},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}
