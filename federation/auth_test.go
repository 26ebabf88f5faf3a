package federation_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"persona/federation"
)

// TestXMatrix sends requests to a route behind X-Matrix authentication,
// over real TLS: one signed by a known server passes with its origin and
// body, and every request that is unsigned, wrongly signed, altered or
// addressed elsewhere is refused with 401 M_UNAUTHORIZED.
func TestXMatrix(t *testing.T) {
	t.Parallel()
	b := startPeer(t, peerConfig{name: "b.test"})
	a := startPeer(t, peerConfig{name: "a.test", tune: reach(b)})
	whoami(a)
	const uri = "/_matrix/federation/v1/whoami"
	bid := b.Identity()
	_, otherKey, _ := ed25519.GenerateKey(nil)
	content := map[string]any{"n": 1}

	status, body := do(t, signed(t, a.url(), bid, a.name, nil, "POST", uri, content))
	if got, _ := body["body"].(map[string]any); status != http.StatusOK || body["origin"] != "b.test" || got["n"] != 1.0 {
		t.Fatalf("signed request: %d %v", status, body)
	}

	unknown := bid
	unknown.ServerName = "unknown.test"
	tampered := signed(t, a.url(), bid, a.name, nil, "POST", uri, content)
	tampered.Body, tampered.ContentLength, tampered.GetBody = io.NopCloser(strings.NewReader(`{"n":2}`)), 7, nil
	otherURI := signed(t, a.url(), bid, a.name, nil, "POST", uri+"?x=1", content)
	otherURI.URL.RawQuery = ""
	for _, tc := range []struct {
		name string
		req  *http.Request
	}{
		{"unsigned", func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, a.url()+uri, strings.NewReader(`{"n":1}`))
			r.Header.Set("Content-Type", "application/json")
			return r
		}()},
		{"wrong key", signed(t, a.url(), bid, a.name, otherKey, "POST", uri, content)},
		{"another destination", signed(t, a.url(), bid, "c.test", nil, "POST", uri, content)},
		{"altered body", tampered},
		{"altered uri", otherURI},
		{"origin without keys", signed(t, a.url(), unknown, a.name, nil, "POST", uri, content)},
		{"no signature", func() *http.Request {
			r := signed(t, a.url(), bid, a.name, nil, "POST", uri, content)
			r.Header.Set("Authorization", `X-Matrix origin="b.test",key="`+string(bid.KeyID)+`",destination="a.test"`)
			return r
		}()},
		{"bad origin", func() *http.Request {
			r := signed(t, a.url(), bid, a.name, nil, "POST", uri, content)
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), `origin="b.test"`, `origin="b_test"`, 1))
			return r
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := do(t, tc.req)
			if status != http.StatusUnauthorized || body["errcode"] != "M_UNAUTHORIZED" {
				t.Fatalf("got %d %v, want 401 M_UNAUTHORIZED", status, body)
			}
		})
	}

	// A route behind authentication that does not exist is unrecognised,
	// and the public routes need no signature.
	status, body = do(t, signed(t, a.url(), bid, a.name, nil, "GET", "/_matrix/federation/v1/nothing", nil))
	if status != http.StatusNotFound || body["errcode"] != "M_UNRECOGNIZED" {
		t.Fatalf("unknown route: %d %v", status, body)
	}
	if status, body := get(t, a.url()+"/_matrix/key/v2/server"); status != http.StatusOK {
		t.Fatalf("public route: %d %v", status, body)
	}
}

// TestClientSignsForItsServer sends a request through a server's own
// client to a server named by its IP address and port: the client signs
// it as its server and reaches the other with no discovery and no
// destinations, and the other fetches the client's server's key the same
// way to verify it.
func TestClientSignsForItsServer(t *testing.T) {
	t.Parallel()
	a := startPeer(t, peerConfig{})
	b := startPeer(t, peerConfig{})
	a.Handle("GET /_matrix/federation/v1/query/profile", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"displayname": string(federation.Origin(r.Context())) + " asks for " + r.URL.Query().Get("user_id")})
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	user := "@alice:" + string(a.name)
	res, err := b.Client().LookupProfile(ctx, b.name, a.name, user, "")
	if err != nil {
		t.Fatal(err)
	}
	if want := string(b.name) + " asks for " + user; res.DisplayName != want {
		t.Fatalf("displayname %q, want %q", res.DisplayName, want)
	}
}
