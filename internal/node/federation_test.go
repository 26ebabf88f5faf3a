package node_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"persona/config"
	"persona/internal/testnode"
)

// TestFederationIdentitySurvivesARestart: a node started twice on one data
// directory presents the same signing key, under the same key ID, and the
// same TLS certificate on its federation listener.
func TestFederationIdentitySurvivesARestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	n := testnode.Start(t, dir, nil)
	keyID, cert := serverKeys(t, n)
	if id := n.Federation().Identity(); id.KeyID != keyID || id.ServerName != testnode.ServerName {
		t.Fatalf("the listener answers key %s, the node's identity is %s of %s", keyID, id.KeyID, id.ServerName)
	}
	if info, err := os.Stat(filepath.Join(dir, "signing.key")); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("signing.key: %v", err)
	}
	n.Stop()

	n = testnode.Start(t, dir, nil)
	keyID2, cert2 := serverKeys(t, n)
	if keyID2 != keyID || string(cert2) != string(cert) {
		t.Fatalf("after a restart: key %s, certificate changed %v; want key %s and the same certificate", keyID2, string(cert2) != string(cert), keyID)
	}

	off := testnode.Start(t, "", func(c *config.Config) { c.Listen.Federation = "" })
	if off.FederationAddr() != "" || off.Federation() != nil {
		t.Fatalf("federation off, yet listening on %q", off.FederationAddr())
	}
}

// serverKeys fetches a node's /_matrix/key/v2/server over TLS and returns
// its one key ID, checked as gomatrixserverlib checks it, and the
// certificate the listener presented.
func serverKeys(t *testing.T, n *testnode.Node) (gomatrixserverlib.KeyID, []byte) {
	t.Helper()
	cli := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := cli.Get("https://" + n.FederationAddr() + "/_matrix/key/v2/server")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var keys gomatrixserverlib.ServerKeys
	if err := json.NewDecoder(resp.Body).Decode(&keys); err != nil {
		t.Fatal(err)
	}
	checks, ed := gomatrixserverlib.CheckKeys(spec.ServerName(n.Config.ServerName), time.Now(), keys)
	if !checks.AllChecksOK || len(ed) != 1 {
		t.Fatalf("key response %s: %+v", keys.Raw, checks)
	}
	for id := range ed {
		return id, resp.TLS.PeerCertificates[0].Raw
	}
	return "", nil
}

// TestTwoNodesNamedByAddress: two nodes named after their federation
// listeners (127.0.0.1:PORT) reach each other with no discovery and no
// destinations: one verifies the other's signature with the key it
// fetched, and answers a request the other's client signed.
func TestTwoNodesNamedByAddress(t *testing.T) {
	t.Parallel()
	byAddress := func(c *config.Config) {
		c.Listen.Federation = freeAddr(t)
		c.ServerName = c.Listen.Federation
		c.Federation.InsecureSkipVerify = true
	}
	a := testnode.Start(t, "", byAddress)
	b := testnode.Start(t, "", byAddress)
	alice := a.Register("alice")
	if want := "@alice:" + a.FederationAddr(); string(alice.UserID) != want {
		t.Fatalf("user ID %s, want %s", alice.UserID, want)
	}

	bid := b.Federation().Identity()
	msg, err := gomatrixserverlib.SignJSON(string(bid.ServerName), bid.KeyID, bid.PrivateKey, []byte(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := a.Federation().KeyRing().VerifyJSONs(ctx, []gomatrixserverlib.VerifyJSONRequest{{
		ServerName: bid.ServerName, AtTS: spec.AsTimestamp(time.Now()), Message: msg,
		ValidityCheckingFunc: gomatrixserverlib.StrictValiditySignatureCheck,
	}})
	if err != nil || res[0].Error != nil {
		t.Fatalf("a verifies b's signature: %v %v", err, res)
	}

	if err := alice.SetDisplayName(ctx, "Alice of A"); err != nil {
		t.Fatal(err)
	}
	p, err := b.Federation().Client().LookupProfile(ctx, bid.ServerName, spec.ServerName(a.Config.ServerName), string(alice.UserID), "")
	if err != nil {
		t.Fatal(err)
	}
	if want := "Alice of A"; p.DisplayName != want {
		t.Fatalf("displayname %q, want %q", p.DisplayName, want)
	}
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string { return testnode.FreeAddr(t) }
