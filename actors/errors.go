package actors

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

// notFound is the answer for a subject that does not exist.
func notFound(subject Error_Subject, msg string) *Error {
	return &Error{Kind: Error_NOT_FOUND, Subject: subject, Message: msg}
}

// forbidden is the answer for a sender who may not do what it asks.
func forbidden(msg string) *Error { return &Error{Kind: Error_FORBIDDEN, Message: msg} }

// badValue is the answer for a value the subject may not take.
func badValue(subject Error_Subject, msg string) *Error {
	return &Error{Kind: Error_BAD_VALUE, Subject: subject, Message: msg}
}

// malformed is the answer for a body or content without the shape required.
func malformed(subject Error_Subject, msg string) *Error {
	return &Error{Kind: Error_MALFORMED, Subject: subject, Message: msg}
}

// tooLarge is the answer for a subject over its size limit.
func tooLarge(subject Error_Subject, msg string) *Error {
	return &Error{Kind: Error_LIMIT_EXCEEDED, Subject: subject, Message: msg}
}

// conflict is the answer for a request the subject's current state refuses.
func conflict(subject Error_Subject, msg string) *Error {
	return &Error{Kind: Error_CONFLICT, Subject: subject, Message: msg}
}

// unsupported is the answer for a request an actor does not handle.
func unsupported() *Error { return &Error{Kind: Error_UNSUPPORTED, Message: "Unknown request."} }

// internal is the answer for a failure of the server itself.
func internal(msg string) *Error { return &Error{Kind: Error_INTERNAL, Message: msg} }
