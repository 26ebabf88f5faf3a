package api

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"

	"maunium.net/go/mautrix/id"

	"persona/actors"
)

// session is an authenticated request's user and device.
type session struct {
	user   id.UserID
	device string
	admin  bool
}

// newToken makes an access token. It names its user, so that any node can
// route the check to the user's actor, and holds 256 random bits; only its
// SHA-256 is stored.
func newToken(user id.UserID) (token string, hash []byte) {
	token = "pt_" + base64.RawURLEncoding.EncodeToString([]byte(user)) + "_" + randomString(32)
	return token, hashToken(token)
}

func hashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// tokenUser is the user a token names, or "".
func tokenUser(token string) id.UserID {
	rest, ok := strings.CutPrefix(token, "pt_")
	if !ok {
		return ""
	}
	enc, _, ok := strings.Cut(rest, "_")
	if !ok {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return ""
	}
	return id.UserID(b)
}

// randomString is n random bytes, base64url-encoded.
func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// accessToken finds the token in the Authorization header or, as older
// clients send it, the access_token query parameter.
func accessToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if t, ok := strings.CutPrefix(h, "Bearer "); ok {
			return strings.TrimSpace(t)
		}
		return ""
	}
	return r.URL.Query().Get("access_token")
}

// authenticate checks the request's access token.
func (s *Server) authenticate(r *http.Request) (*session, error) {
	token := accessToken(r)
	if token == "" {
		return nil, errMissingToken
	}
	user := tokenUser(token)
	if user == "" || user.Homeserver() != s.cfg.ServerName {
		return nil, errUnknownToken
	}
	a, err := s.host.Authenticate(r.Context(), string(user), hashToken(token))
	if errors.Is(err, actors.ErrTimeout) {
		return nil, errUnavailable
	}
	if err != nil {
		return nil, errInternal
	}
	if !a.Ok {
		return nil, errUnknownToken
	}
	return &session{user: user, device: a.DeviceId, admin: a.Admin}, nil
}

// authed wraps a handler that needs an access token.
func (s *Server) authed(h authedHandler) handler {
	return func(r *http.Request) (any, error) {
		sess, err := s.authenticate(r)
		if err != nil {
			return nil, err
		}
		return h(r, sess)
	}
}
