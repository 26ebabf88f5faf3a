package federation_test

import (
	"bytes"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"persona/federation"
	"persona/storage"
)

// TestNewChecksOptions: New names each option it cannot run with.
func TestNewChecksOptions(t *testing.T) {
	t.Parallel()
	_, err := federation.New(federation.Options{ServerName: "bad name", TLSCert: "c.pem", Notaries: []string{"x_y"}, MaxRequestBytes: -1})
	if err == nil {
		t.Fatal("New took bad options")
	}
	for _, want := range []string{"ServerName", "DataDir", "TLSCert and TLSKey", "Store", `notary "x_y"`, "MaxRequestBytes"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

// TestNewWarnsOfTestSettings: destinations and skipping certificate checks
// are logged as warnings, since they bypass discovery and TLS.
func TestNewWarnsOfTestSettings(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st, err := storage.Open(filepath.Join(dir, "db"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, tc := range []struct {
		name     string
		tune     func(*federation.Options)
		warnings int
		words    []string
	}{
		{"neither", func(*federation.Options) {}, 0, nil},
		{"both", func(o *federation.Options) {
			o.Destinations = map[string]string{"b.test": "https://127.0.0.1:1"}
			o.InsecureSkipVerify = true
		}, 2, []string{"federation.destinations", "b.test", "federation.insecure_skip_verify"}},
	} {
		var logs bytes.Buffer
		o := federation.Options{ServerName: "a.test", DataDir: dir, Store: st, Log: slog.New(slog.NewTextHandler(&logs, nil))}
		tc.tune(&o)
		if _, err := federation.New(o); err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(logs.String(), "level=WARN"); n != tc.warnings {
			t.Errorf("%s: %d warnings in %q, want %d", tc.name, n, logs.String(), tc.warnings)
		}
		for _, w := range tc.words {
			if !strings.Contains(logs.String(), w) {
				t.Errorf("%s: logs %q lack %q", tc.name, logs.String(), w)
			}
		}
	}
}

// TestShutdownLeavesNoGoroutines: after requests both ways (key fetches
// over the client's connections, a signed request to the listener),
// Shutdown and closing the store end every goroutine the servers started.
func TestShutdownLeavesNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	a := startPeer(t, peerConfig{})
	b := startPeer(t, peerConfig{})
	whoami(a)
	cli := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	req := signed(t, a.url(), b.Identity(), a.name, nil, "POST", "/_matrix/federation/v1/whoami", map[string]int{"n": 1})
	resp, err := cli.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("signed request: %d", resp.StatusCode)
	}
	if err := verify(b.KeyRing(), a.name, signedByJSON(t, a.Identity())); err != nil {
		t.Fatal(err)
	}
	cli.CloseIdleConnections()
	a.stop()
	b.stop()
}
