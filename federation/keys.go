package federation

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// ownKeys returns this server's key response, signed with its key:
// its one verify key, no old ones, valid until KeyValidity after now.
func (s *Server) ownKeys(now time.Time) ([]byte, error) {
	fields := gomatrixserverlib.ServerKeyFields{
		ServerName: s.id.ServerName,
		VerifyKeys: map[gomatrixserverlib.KeyID]gomatrixserverlib.VerifyKey{
			s.id.KeyID: {Key: spec.Base64Bytes(s.id.PrivateKey.Public().(ed25519.PublicKey))},
		},
		OldVerifyKeys: map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{},
		ValidUntilTS:  spec.AsTimestamp(now.Add(s.opts.KeyValidity)),
	}
	raw, err := json.Marshal(fields)
	if err != nil {
		return nil, err
	}
	return gomatrixserverlib.SignJSON(string(s.id.ServerName), s.id.KeyID, s.id.PrivateKey, raw)
}

// serverKeys answers GET /_matrix/key/v2/server (and the legacy form with
// a key ID, which answers the same) with this server's signed keys.
func (s *Server) serverKeys(w http.ResponseWriter, _ *http.Request) {
	b, err := s.ownKeys(time.Now())
	if err != nil {
		s.opts.Log.Error("sign key response", "err", err)
		writeError(w, http.StatusInternalServerError, "M_UNKNOWN", "Could not sign the key response.")
		return
	}
	writeJSON(w, http.StatusOK, json.RawMessage(b))
}

// queryKeysGet answers GET /_matrix/key/v2/query/{serverName}: the notary's
// answer for one server.
func (s *Server) queryKeysGet(w http.ResponseWriter, r *http.Request) {
	name := spec.ServerName(r.PathValue("serverName"))
	if _, _, ok := spec.ParseAndValidateServerName(name); !ok {
		writeError(w, http.StatusBadRequest, "M_INVALID_PARAM", "Not a server name.")
		return
	}
	if v := r.URL.Query().Get("minimum_valid_until_ts"); v != "" {
		if _, err := strconv.ParseUint(v, 10, 64); err != nil {
			writeError(w, http.StatusBadRequest, "M_INVALID_PARAM", "minimum_valid_until_ts is not a timestamp.")
			return
		}
	}
	s.answerQuery(w, []spec.ServerName{name})
}

// queryKeysPost answers POST /_matrix/key/v2/query: the notary's answer for
// every server the body's server_keys names.
func (s *Server) queryKeysPost(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		writeError(w, http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "Request body too large.")
		return
	}
	var req gomatrixserverlib.PublicKeyNotaryLookupRequest
	if err != nil || json.Unmarshal(body, &req) != nil {
		writeError(w, http.StatusBadRequest, "M_NOT_JSON", "The body is not a key query.")
		return
	}
	names := make([]spec.ServerName, 0, len(req.ServerKeys))
	for name := range req.ServerKeys {
		if _, _, ok := spec.ParseAndValidateServerName(name); ok {
			names = append(names, name)
		}
	}
	s.answerQuery(w, names)
}

// answerQuery answers a notary query for names with the key responses it
// holds that are still valid: this server's own, and those other servers
// gave directly, each signed by this server too. Servers it holds nothing
// valid for are left out; it fetches nothing.
func (s *Server) answerQuery(w http.ResponseWriter, names []spec.ServerName) {
	now := time.Now()
	out := make([]json.RawMessage, 0, len(names))
	for _, name := range names {
		if name == s.id.ServerName {
			b, err := s.ownKeys(now)
			if err != nil {
				s.opts.Log.Error("sign key response", "err", err)
				continue
			}
			out = append(out, b)
			continue
		}
		keys, ok, err := s.keys.response(name)
		if err != nil {
			s.opts.Log.Warn("read a stored key response", "server", name, "err", err)
		}
		if !ok || keys.ValidUntilTS <= spec.AsTimestamp(now) {
			continue
		}
		b, err := gomatrixserverlib.SignJSON(string(s.id.ServerName), s.id.KeyID, s.id.PrivateKey, keys.Raw)
		if err != nil {
			s.opts.Log.Error("sign a stored key response", "server", name, "err", err)
			continue
		}
		out = append(out, b)
	}
	writeJSON(w, http.StatusOK, map[string]any{"server_keys": out})
}
