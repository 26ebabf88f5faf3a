package federation

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/matrix-org/util"

	"persona/internal/mxid"
)

// originKey is the context key of a request's verified origin.
type originKey struct{}

// Origin returns the server that signed the request whose context ctx is,
// as the X-Matrix authentication verified it; "" outside a handler
// registered with Server.Handle.
func Origin(ctx context.Context) spec.ServerName {
	s, _ := ctx.Value(originKey{}).(spec.ServerName)
	return s
}

// authenticate wraps h in X-Matrix authentication: a request reaches h only
// if an Authorization header names its origin, key and signature, its
// destination (when named) is this server, and the signature verifies
// with the origin's key, fetched through the key ring. Others are answered
// 401 M_UNAUTHORIZED. h gets the body, read whole (up to MaxRequestBytes)
// to verify it, and the origin in its context.
func (s *Server) authenticate(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if msg := s.checkAuthorization(r); msg != "" {
			writeError(w, http.StatusUnauthorized, "M_UNAUTHORIZED", msg)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxRequestBytes))
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			writeError(w, http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "Request body too large.")
			return
		case err != nil:
			writeError(w, http.StatusBadRequest, "M_UNKNOWN", "Could not read the request body.")
			return
		}
		ctx := util.ContextWithLogger(r.Context(), s.libLog.WithField("path", r.URL.Path))
		r = r.WithContext(ctx)
		r.Body = io.NopCloser(bytes.NewReader(body))
		fr, res := fclient.VerifyHTTPRequest(r, time.Now(), s.id.ServerName, nil, s.ring)
		if fr == nil {
			switch res.Code {
			case http.StatusUnauthorized:
				writeError(w, http.StatusUnauthorized, "M_UNAUTHORIZED", "The request's signature does not verify with its origin's keys.")
			case http.StatusBadRequest:
				writeError(w, http.StatusBadRequest, "M_NOT_JSON", "The request body is not JSON in UTF-8.")
			default:
				writeError(w, http.StatusInternalServerError, "M_UNKNOWN", "Could not check the request's signature.")
			}
			return
		}
		r = r.WithContext(context.WithValue(ctx, originKey{}, fr.Origin()))
		r.Body = io.NopCloser(bytes.NewReader(body))
		h.ServeHTTP(w, r)
	})
}

// checkAuthorization returns why r's X-Matrix headers cannot authenticate
// it, or "": there is none, one lacks its origin, key or signature, names
// a malformed origin or another origin than the others, or is addressed
// to another server.
func (s *Server) checkAuthorization(r *http.Request) string {
	var origin spec.ServerName
	for _, h := range r.Header.Values("Authorization") {
		scheme, o, dest, key, sig := fclient.ParseAuthorization(h)
		if scheme != "X-Matrix" {
			continue
		}
		switch {
		case o == "" || key == "" || sig == "":
			return "The X-Matrix authorization lacks its origin, key or sig."
		case !mxid.ValidServerName(string(o)):
			return "The X-Matrix origin is not a server name."
		case origin != "" && o != origin:
			return "The X-Matrix authorizations name different origins."
		case dest != "" && dest != s.id.ServerName:
			return "The request is addressed to " + string(dest) + ", not to this server."
		}
		origin = o
	}
	if origin == "" {
		return "Missing X-Matrix authorization."
	}
	return ""
}
