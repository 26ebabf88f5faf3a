package api

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"strconv"

	"persona/media"
	"persona/wire"
)

// Error is a Matrix error answer: an HTTP status, an errcode and a message.
// It is turned into JSON in one place, writeError.
type Error struct {
	Status  int
	Code    string
	Message string
	// RetryAfterMs is set on M_LIMIT_EXCEEDED; it becomes the Retry-After header.
	RetryAfterMs int64
	// Fields are more of the JSON body (user-interactive auth's flows); a
	// body with Fields has no errcode when Code is empty.
	Fields map[string]any
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func errorf(status int, code, msg string) *Error {
	return &Error{Status: status, Code: code, Message: msg}
}

// Errors of a request the api refuses itself, one constructor per errcode.

// invalidParam answers a parameter or field with a bad value.
func invalidParam(msg string) *Error { return errorf(400, "M_INVALID_PARAM", msg) }

// missingParam answers a required parameter or field left out.
func missingParam(msg string) *Error { return errorf(400, "M_MISSING_PARAM", msg) }

// badJSON answers a body that is JSON but not of the shape required.
func badJSON(msg string) *Error { return errorf(400, "M_BAD_JSON", msg) }

// badRequest answers a request refused for a reason the spec names no
// errcode for.
func badRequest(msg string) *Error { return errorf(400, "M_UNKNOWN", msg) }

// invalidUsername answers a user ID or localpart this server will not
// register.
func invalidUsername(msg string) *Error { return errorf(400, "M_INVALID_USERNAME", msg) }

// forbidden answers a request its sender may not make.
func forbidden(msg string) *Error { return errorf(403, "M_FORBIDDEN", msg) }

// notFound answers a request for something that does not exist.
func notFound(msg string) *Error { return errorf(404, "M_NOT_FOUND", msg) }

// Errors used by several handlers.
var (
	errMissingToken = errorf(401, "M_MISSING_TOKEN", "Missing access token.")
	errUnknownToken = errorf(401, "M_UNKNOWN_TOKEN", "Unrecognised access token.")
	errNotJSON      = errorf(400, "M_NOT_JSON", "Content not JSON.")
	errTooLarge     = errorf(413, "M_TOO_LARGE", "Request body too large.")
	errUnavailable  = errorf(503, "M_UNKNOWN", "The server is busy; try again.")
	errInternal     = errorf(500, "M_UNKNOWN", "Internal server error.")
	errUnrecognized = errorf(404, "M_UNRECOGNIZED", "Unrecognized request.")
	// errClientGone answers a request whose client went away before its
	// answer (its context canceled): nobody reads it, but the metrics
	// count it apart from the server's failures, under 499 as proxies do.
	errClientGone = errorf(499, "M_UNKNOWN", "The client closed the request.")
)

// errcode is the HTTP status and Matrix errcode an error is answered with.
type errcode struct {
	status int
	code   string
}

// errorClass is an actor's error kind and subject; the subject NONE stands
// for every subject without an entry of its own.
type errorClass struct {
	kind    wire.Error_Kind
	subject wire.Error_Subject
}

// errcodes is the answer to each kind of actor error, and to the subjects
// whose errcode the spec names apart.
var errcodes = map[errorClass]errcode{
	{wire.Error_INTERNAL, wire.Error_NONE}:          {500, "M_UNKNOWN"},
	{wire.Error_NOT_FOUND, wire.Error_NONE}:         {404, "M_NOT_FOUND"},
	{wire.Error_FORBIDDEN, wire.Error_NONE}:         {403, "M_FORBIDDEN"},
	{wire.Error_BAD_VALUE, wire.Error_NONE}:         {400, "M_INVALID_PARAM"},
	{wire.Error_MALFORMED, wire.Error_NONE}:         {400, "M_BAD_JSON"},
	{wire.Error_LIMIT_EXCEEDED, wire.Error_NONE}:    {429, "M_LIMIT_EXCEEDED"},
	{wire.Error_LIMIT_EXCEEDED, wire.Error_KEY}:     {400, "M_KEY_TOO_LARGE"},
	{wire.Error_LIMIT_EXCEEDED, wire.Error_PROFILE}: {400, "M_PROFILE_TOO_LARGE"},
	{wire.Error_CONFLICT, wire.Error_NONE}:          {409, "M_UNKNOWN"},
	{wire.Error_CONFLICT, wire.Error_USER}:          {400, "M_USER_IN_USE"},
	{wire.Error_CONFLICT, wire.Error_ROOM}:          {400, "M_ROOM_IN_USE"},
	{wire.Error_CONFLICT, wire.Error_MEMBERSHIP}:    {400, "M_UNKNOWN"},
	{wire.Error_UNSUPPORTED, wire.Error_NONE}:       {400, "M_UNRECOGNIZED"},
	{wire.Error_UNAVAILABLE, wire.Error_NONE}:       {503, "M_UNKNOWN"},
}

// sentinels is the answer to each error the media store names, matched
// with errors.Is; any other error of the store is a failure of the disk
// beneath it, answered as an internal error.
var sentinels = []struct {
	err    error
	answer *Error
}{
	{media.ErrNotFound, notFound("Media not found.")},
	{media.ErrNotYetUploaded, errorf(504, "M_NOT_YET_UPLOADED", "The media has not been uploaded yet.")},
	{media.ErrTooLarge, errTooLarge},
	{media.ErrNotCreator, forbidden("This media ID was created by another user.")},
	{media.ErrAlreadyUploaded, errorf(409, "M_CANNOT_OVERWRITE_MEDIA", "Media has already been uploaded to this ID.")},
	{media.ErrBadFilename, invalidParam("Invalid filename.")},
	{media.ErrBadThumbnailSpec, invalidParam("Invalid thumbnail size or method.")},
	{media.ErrImageTooLarge, badRequest("The image is too large to thumbnail.")},
	{media.ErrBusy, errUnavailable},
}

// fromActor is the answer to an actor's error, looked up in errcodes: its
// kind and subject, else its kind, else an internal error.
func fromActor(e *wire.Error) *Error {
	c, ok := errcodes[errorClass{e.GetKind(), e.GetSubject()}]
	if !ok {
		c, ok = errcodes[errorClass{e.GetKind(), wire.Error_NONE}]
	}
	if !ok {
		c = errcodes[errorClass{wire.Error_INTERNAL, wire.Error_NONE}]
	}
	return &Error{Status: c.status, Code: c.code, Message: e.GetMessage(), RetryAfterMs: int64(e.GetRetryAfterMs())}
}

// answer is the Matrix error err is answered with: an api Error as it is,
// an actor's Error through errcodes, a sentinel through sentinels, a
// request its client gave up (context.Canceled) errClientGone, anything
// else an internal error.
func answer(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var ae *wire.Error
	if errors.As(err, &ae) {
		return fromActor(ae)
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			return s.answer
		}
	}
	if errors.Is(err, context.Canceled) {
		return errClientGone
	}
	return errInternal
}

// isKind reports whether err is an actor's error of kind k.
func isKind(err error, k wire.Error_Kind) bool {
	var ae *wire.Error
	return errors.As(err, &ae) && ae.Kind == k
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

// writeError answers err as a Matrix error (see answer).
func writeError(w http.ResponseWriter, err error) {
	e := answer(err)
	body := map[string]any{}
	maps.Copy(body, e.Fields)
	if e.Code != "" || e.Fields == nil {
		body["errcode"], body["error"] = e.Code, e.Message
	}
	if e.RetryAfterMs > 0 {
		body["retry_after_ms"] = e.RetryAfterMs
		w.Header().Set("Retry-After", strconv.FormatInt((e.RetryAfterMs+999)/1000, 10))
	}
	writeJSON(w, e.Status, body)
}
