package federation_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"persona/federation"
)

// TestServerKeysPassTheLibrarysChecks fetches a server's keys with
// another server's fclient and checks them as gomatrixserverlib does
// before it trusts a key: the name, a future valid_until_ts and the
// self-signature of every ed25519 key.
func TestServerKeysPassTheLibrarysChecks(t *testing.T) {
	t.Parallel()
	b := startPeer(t, peerConfig{name: "b.test", tune: func(o *federation.Options) { o.KeyValidity = 3 * time.Hour }})
	a := startPeer(t, peerConfig{name: "a.test", tune: reach(b)})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	before := time.Now()
	keys, err := a.Client().GetServerKeys(ctx, b.name)
	if err != nil {
		t.Fatal(err)
	}
	checks, ed := gomatrixserverlib.CheckKeys(b.name, time.Now(), keys)
	if !checks.AllChecksOK {
		t.Fatalf("checks of %s: %+v", keys.Raw, checks)
	}
	id := b.Identity()
	if got, want := ed[id.KeyID], spec.Base64Bytes(pub(id)); len(ed) != 1 || string(got) != string(want) {
		t.Fatalf("verified keys %v, want only %s = %s", ed, id.KeyID, want.Encode())
	}
	if err := gomatrixserverlib.VerifyJSON(string(b.name), id.KeyID, pub(id), keys.Raw); err != nil {
		t.Fatalf("self-signature: %v", err)
	}
	lo, hi := spec.AsTimestamp(before.Add(3*time.Hour)), spec.AsTimestamp(time.Now().Add(3*time.Hour))
	if keys.ValidUntilTS < lo || keys.ValidUntilTS > hi {
		t.Fatalf("valid_until_ts %d, want within [%d, %d] (now + key validity)", keys.ValidUntilTS, lo, hi)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(keys.Raw, &raw); err != nil {
		t.Fatal(err)
	}
	if string(raw["old_verify_keys"]) != "{}" {
		t.Fatalf("old_verify_keys = %s, want {}", raw["old_verify_keys"])
	}

	// The legacy form with a key ID answers the same keys.
	status, body := get(t, b.url()+"/_matrix/key/v2/server/"+string(id.KeyID))
	if vk, _ := body["verify_keys"].(map[string]any); status != http.StatusOK || vk[string(id.KeyID)] == nil {
		t.Fatalf("legacy key request: %d %v", status, body)
	}
}

// TestNotaryAnswersItsOwnAndStoredKeys asks a server's notary routes for
// its own keys and for keys it fetched from another server: each answer
// passes gomatrixserverlib's checks and carries the notary's signature.
func TestNotaryAnswersItsOwnAndStoredKeys(t *testing.T) {
	t.Parallel()
	b := startPeer(t, peerConfig{name: "b.test"})
	n := startPeer(t, peerConfig{name: "notary.test", tune: reach(b)})
	if err := verify(n.KeyRing(), b.name, signedByJSON(t, b.Identity())); err != nil {
		t.Fatalf("the notary verifies b: %v", err)
	}
	nid := n.Identity()
	for _, tc := range []struct {
		name   string
		server spec.ServerName
		query  func() (int, map[string]any)
	}{
		{"GET own", n.name, func() (int, map[string]any) { return get(t, n.url()+"/_matrix/key/v2/query/notary.test") }},
		{"GET stored", b.name, func() (int, map[string]any) {
			return get(t, n.url()+"/_matrix/key/v2/query/b.test?minimum_valid_until_ts=1")
		}},
		{"POST both", "", func() (int, map[string]any) {
			req, _ := http.NewRequest(http.MethodPost, n.url()+"/_matrix/key/v2/query",
				strings.NewReader(`{"server_keys":{"b.test":{},"notary.test":{"`+string(nid.KeyID)+`":{"minimum_valid_until_ts":0}},"unknown.test":{}}}`))
			return do(t, req)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := tc.query()
			list, _ := body["server_keys"].([]any)
			want := 1
			if tc.server == "" {
				want = 2
			}
			if status != http.StatusOK || len(list) != want {
				t.Fatalf("got %d %v, want %d responses", status, body, want)
			}
			for _, item := range list {
				raw, _ := json.Marshal(item)
				var keys gomatrixserverlib.ServerKeys
				if err := json.Unmarshal(raw, &keys); err != nil {
					t.Fatal(err)
				}
				if tc.server != "" && keys.ServerName != tc.server {
					t.Fatalf("response for %s, want %s", keys.ServerName, tc.server)
				}
				if checks, _ := gomatrixserverlib.CheckKeys(keys.ServerName, time.Now(), keys); !checks.AllChecksOK {
					t.Fatalf("checks of %s: %+v", raw, checks)
				}
				if err := gomatrixserverlib.VerifyJSON(string(n.name), nid.KeyID, pub(nid), raw); err != nil {
					t.Fatalf("notary signature on %s: %v", raw, err)
				}
			}
		})
	}

	// A server the notary knows nothing of is left out, not fetched.
	status, body := get(t, n.url()+"/_matrix/key/v2/query/nobody.test")
	if list, _ := body["server_keys"].([]any); status != http.StatusOK || len(list) != 0 {
		t.Fatalf("query for an unknown server: %d %v", status, body)
	}
	status, body = get(t, n.url()+"/_matrix/key/v2/query/not_a_name")
	if status != http.StatusBadRequest || body["errcode"] != "M_INVALID_PARAM" {
		t.Fatalf("query for a bad name: %d %v", status, body)
	}
}

// TestVersionAndUnknownRoutes checks the version route and the Matrix
// errors for routes and methods the listener does not serve.
func TestVersionAndUnknownRoutes(t *testing.T) {
	t.Parallel()
	p := startPeer(t, peerConfig{tune: func(o *federation.Options) { o.Version = "1.2.3" }})
	status, body := get(t, p.url()+"/_matrix/federation/v1/version")
	if server, _ := body["server"].(map[string]any); status != http.StatusOK || server["name"] != "persona" || server["version"] != "1.2.3" {
		t.Fatalf("version: %d %v", status, body)
	}
	status, body = get(t, p.url()+"/_matrix/federation/v1/no/such/route")
	if status != http.StatusNotFound || body["errcode"] != "M_UNRECOGNIZED" {
		t.Fatalf("unknown route: %d %v", status, body)
	}
	req, _ := http.NewRequest(http.MethodDelete, p.url()+"/_matrix/key/v2/server", nil)
	status, body = do(t, req)
	if status != http.StatusMethodNotAllowed || body["errcode"] != "M_UNRECOGNIZED" {
		t.Fatalf("wrong method: %d %v", status, body)
	}
}
