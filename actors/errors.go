package actors

import "persona/wire"

// notFound is the answer for a subject that does not exist.
func notFound(subject wire.Error_Subject, msg string) *wire.Error {
	return &wire.Error{Kind: wire.Error_NOT_FOUND, Subject: subject, Message: msg}
}

// forbidden is the answer for a sender who may not do what it asks.
func forbidden(msg string) *wire.Error { return &wire.Error{Kind: wire.Error_FORBIDDEN, Message: msg} }

// badValue is the answer for a value the subject may not take.
func badValue(subject wire.Error_Subject, msg string) *wire.Error {
	return &wire.Error{Kind: wire.Error_BAD_VALUE, Subject: subject, Message: msg}
}

// malformed is the answer for a body or content without the shape required.
func malformed(subject wire.Error_Subject, msg string) *wire.Error {
	return &wire.Error{Kind: wire.Error_MALFORMED, Subject: subject, Message: msg}
}

// tooLarge is the answer for a subject over its size limit.
func tooLarge(subject wire.Error_Subject, msg string) *wire.Error {
	return &wire.Error{Kind: wire.Error_LIMIT_EXCEEDED, Subject: subject, Message: msg}
}

// conflict is the answer for a request the subject's current state refuses.
func conflict(subject wire.Error_Subject, msg string) *wire.Error {
	return &wire.Error{Kind: wire.Error_CONFLICT, Subject: subject, Message: msg}
}

// unsupported is the answer for a request an actor does not handle.
func unsupported() *wire.Error {
	return &wire.Error{Kind: wire.Error_UNSUPPORTED, Message: "Unknown request."}
}

// internal is the answer for a failure of the server itself.
func internal(msg string) *wire.Error { return &wire.Error{Kind: wire.Error_INTERNAL, Message: msg} }
