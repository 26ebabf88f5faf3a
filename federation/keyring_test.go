package federation_test

import (
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"persona/federation"
)

// TestKeyRingStoresKeysAcrossARestart: a server verifies a request signed
// by another, fetching its key over TLS; restarted with the other server
// gone, it still verifies that server's requests from the key it stored.
func TestKeyRingStoresKeysAcrossARestart(t *testing.T) {
	t.Parallel()
	b := startPeer(t, peerConfig{name: "b.test"})
	dirA := t.TempDir()
	a := startPeer(t, peerConfig{dir: dirA, name: "a.test", tune: reach(b)})
	whoami(a)
	bid := b.Identity()
	const uri = "/_matrix/federation/v1/whoami"
	if status, body := do(t, signed(t, a.url(), bid, a.name, nil, "POST", uri, map[string]int{"n": 1})); status != http.StatusOK || body["origin"] != "b.test" {
		t.Fatalf("first request: %d %v", status, body)
	}
	if got := scrape(t, a, `persona_federation_key_fetches_total{result="found",source="direct"}`); got != "1" {
		t.Fatalf("direct key fetches found = %s, want 1", got)
	}

	b.stop()
	a.stop()
	a = startPeer(t, peerConfig{dir: dirA, name: "a.test", tune: reach(b)})
	whoami(a)
	if status, body := do(t, signed(t, a.url(), bid, a.name, nil, "POST", uri, map[string]int{"n": 2})); status != http.StatusOK || body["origin"] != "b.test" {
		t.Fatalf("request after the restart, b stopped: %d %v", status, body)
	}
	if got := scrape(t, a, `persona_federation_key_fetches_total{result="found",source="store"}`); got != "1" {
		t.Fatalf("keys found in the store = %s, want 1", got)
	}
	for _, result := range []string{"found", "none", "error"} {
		if got := scrape(t, a, `persona_federation_key_fetches_total{result="`+result+`",source="direct"}`); got != "0" {
			t.Fatalf("direct key fetches %s after the restart = %s, want 0", result, got)
		}
	}
	// A key it never had is still refused.
	other := startPeer(t, peerConfig{name: "b.test"}) // another key for the same name
	if status, body := do(t, signed(t, a.url(), other.Identity(), a.name, nil, "POST", uri, map[string]int{"n": 3})); status != http.StatusUnauthorized {
		t.Fatalf("request signed with an unknown key of b.test: %d %v", status, body)
	}
}

// TestKeyRingAsksTheNotary: a server that cannot reach another asks its
// notary, which vouches for the key the other server gave it directly.
func TestKeyRingAsksTheNotary(t *testing.T) {
	t.Parallel()
	b := startPeer(t, peerConfig{}) // named by its address
	n := startPeer(t, peerConfig{name: "notary.test"})
	if err := verify(n.KeyRing(), b.name, signedByJSON(t, b.Identity())); err != nil {
		t.Fatalf("the notary verifies b: %v", err)
	}
	msg := signedByJSON(t, b.Identity())
	b.stop() // from now on b's address refuses connections

	a := startPeer(t, peerConfig{name: "a.test", tune: func(o *federation.Options) {
		reach(n)(o)
		o.Notaries = []string{"notary.test"}
	}})
	if err := verify(a.KeyRing(), b.name, msg); err != nil {
		t.Fatalf("a verifies b through the notary: %v", err)
	}
	if got := scrape(t, a, `persona_federation_key_fetches_total{result="found",source="notary"}`); got != "1" {
		t.Fatalf("notary fetches found = %s, want 1", got)
	}
	// Without the notary, the same message cannot be verified.
	lone := startPeer(t, peerConfig{name: "lone.test"})
	if err := verify(lone.KeyRing(), b.name, msg); err == nil {
		t.Fatal("a server with no way to b's keys verified b's signature")
	}
}

// TestCertificateCheckedUnlessInsecure: a server named by its IP address
// presents a certificate for that address; a client that checks
// certificates refuses it until it trusts it, and then fetches the keys.
func TestCertificateCheckedUnlessInsecure(t *testing.T) {
	t.Parallel()
	b := startPeer(t, peerConfig{})
	msg := signedByJSON(t, b.Identity())
	strict := startPeer(t, peerConfig{tune: func(o *federation.Options) { o.InsecureSkipVerify = false }})
	if err := verify(strict.KeyRing(), b.name, msg); err == nil {
		t.Fatal("a server checking certificates took b's self-signed one")
	}
	certPEM, err := os.ReadFile(filepath.Join(b.dir, "tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	trusting := startPeer(t, peerConfig{tune: func(o *federation.Options) { o.InsecureSkipVerify, o.RootCAs = false, roots }})
	if err := verify(trusting.KeyRing(), b.name, msg); err != nil {
		t.Fatalf("a server trusting b's certificate: %v", err)
	}
}

// scrape returns the value of one series in p's metrics, "" if absent.
func scrape(t *testing.T, p *peer, series string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	p.metrics.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			return v
		}
	}
	return ""
}
