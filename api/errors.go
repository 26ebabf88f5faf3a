package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"persona/actors"
)

// Error is a Matrix error answer: an HTTP status, an errcode and a message.
// It is turned into JSON in one place, writeError.
type Error struct {
	Status  int
	Code    string
	Message string
	// RetryAfterMs is set on M_LIMIT_EXCEEDED; it becomes the Retry-After header.
	RetryAfterMs int64
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func errorf(status int, code, msg string) *Error {
	return &Error{Status: status, Code: code, Message: msg}
}

// Errors used by several handlers.
var (
	errMissingToken = errorf(401, "M_MISSING_TOKEN", "Missing access token.")
	errUnknownToken = errorf(401, "M_UNKNOWN_TOKEN", "Unrecognised access token.")
	errNotJSON      = errorf(400, "M_NOT_JSON", "Content not JSON.")
	errTooLarge     = errorf(413, "M_TOO_LARGE", "Request body too large.")
	errUnavailable  = errorf(503, "M_UNKNOWN", "The server is busy; try again.")
	errInternal     = errorf(500, "M_UNKNOWN", "Internal server error.")
	errUnrecognized = errorf(404, "M_UNRECOGNIZED", "Unrecognized request.")
)

// fromActor converts an actor's error answer.
func fromActor(e *actors.Error) *Error {
	if e == nil {
		return nil
	}
	return &Error{Status: int(e.Status), Code: e.Errcode, Message: e.Message}
}

// writeJSON answers v as JSON; a json.RawMessage is sent as it is.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := []byte(nil), error(nil)
	if raw, ok := v.(json.RawMessage); ok {
		b = raw
	} else {
		b, err = json.Marshal(v)
	}
	if err != nil {
		status, b = 500, []byte(`{"errcode":"M_UNKNOWN","error":"encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeError(w http.ResponseWriter, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = errInternal
	}
	body := map[string]any{"errcode": e.Code, "error": e.Message}
	if e.RetryAfterMs > 0 {
		body["retry_after_ms"] = e.RetryAfterMs
		w.Header().Set("Retry-After", strconv.FormatInt((e.RetryAfterMs+999)/1000, 10))
	}
	writeJSON(w, e.Status, body)
}
