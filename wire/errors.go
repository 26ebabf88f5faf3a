package wire

import "strings"

// Error returns the kind, the subject and the message, so that an actor's
// Error is a Go error: "not_found room: Unknown room.".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(strings.ToLower(e.GetKind().String()))
	if e.GetSubject() != Error_NONE {
		b.WriteString(" " + strings.ToLower(e.GetSubject().String()))
	}
	b.WriteString(": " + e.GetMessage())
	return b.String()
}
