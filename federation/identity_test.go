package federation

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
)

// TestSigningKeyMadeOnceAndKept: the first load makes a key and writes it
// in Synapse's format, private to its owner; later loads read the same.
func TestSigningKeyMadeOnceAndKept(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, signingKeyFile)
	first, err := loadIdentity(path, "a.test")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(first.KeyID), "ed25519:") || len(first.KeyID) <= len("ed25519:") {
		t.Fatalf("key ID %q", first.KeyID)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v, want 0600", path, info.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	f := strings.Fields(string(data))
	if len(f) != 3 || f[0] != "ed25519" || "ed25519:"+f[1] != string(first.KeyID) {
		t.Fatalf("file %q is not in Synapse's format for %s", data, first.KeyID)
	}
	again, err := loadIdentity(path, "a.test")
	if err != nil {
		t.Fatal(err)
	}
	if again.KeyID != first.KeyID || !again.PrivateKey.Equal(first.PrivateKey) {
		t.Fatalf("second load gave %s, want the key made first, %s", again.KeyID, first.KeyID)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("data dir holds %d files, want the key alone", len(entries))
	}
}

// TestNodesSharingAKeyFileAgree: nodes of one cluster that name one
// signing key file and start together end with one key, the file's.
func TestNodesSharingAKeyFileAgree(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "shared.key")
	const nodes = 8
	ids := make([]*fclient.SigningIdentity, nodes)
	errs := make([]error, nodes)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() { ids[i], errs[i] = loadIdentity(path, "a.test") })
	}
	wg.Wait()
	onDisk, err := loadIdentity(path, "a.test")
	if err != nil {
		t.Fatal(err)
	}
	for i := range nodes {
		if errs[i] != nil {
			t.Fatalf("node %d: %v", i, errs[i])
		}
		if ids[i].KeyID != onDisk.KeyID || !ids[i].PrivateKey.Equal(onDisk.PrivateKey) {
			t.Fatalf("node %d signs with %s, the file holds %s", i, ids[i].KeyID, onDisk.KeyID)
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("the directory holds %d files, want the key alone", len(entries))
	}
}

// TestSigningKeyFormats reads keys written by Synapse and by Dendrite and
// refuses files that are neither.
func TestSigningKeyFormats(t *testing.T) {
	t.Parallel()
	_, key, _ := ed25519.GenerateKey(nil)
	seed := key.Seed()
	dendrite := pem.EncodeToMemory(&pem.Block{Type: "MATRIX PRIVATE KEY", Headers: map[string]string{"Key-ID": "ed25519:abc_1"}, Bytes: seed})
	for _, tc := range []struct {
		name, file string
		wantID     gomatrixserverlib.KeyID // "" when refused
	}{
		{"synapse", "ed25519 a_xyz " + base64.RawStdEncoding.EncodeToString(seed) + "\n", "ed25519:a_xyz"},
		{"synapse padded, two keys", "ed25519 a_1 " + base64.StdEncoding.EncodeToString(seed) + "\ned25519 a_2 AAAA\n", "ed25519:a_1"},
		{"dendrite", string(dendrite), "ed25519:abc_1"},
		{"empty", "", ""},
		{"other algorithm", "rsa a_1 " + base64.RawStdEncoding.EncodeToString(seed), ""},
		{"short seed", "ed25519 a_1 AAAA", ""},
		{"bad version", "ed25519 a:1 " + base64.RawStdEncoding.EncodeToString(seed), ""},
		{"other PEM", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: seed})), ""},
		{"PEM without key ID", string(pem.EncodeToMemory(&pem.Block{Type: "MATRIX PRIVATE KEY", Bytes: seed})), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, got, err := parseSigningKey([]byte(tc.file))
			if tc.wantID == "" {
				if err == nil {
					t.Fatalf("read %q as %s", tc.file, id)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id != tc.wantID || !got.Equal(key) {
				t.Fatalf("read %s and another key, want %s and the key written", id, tc.wantID)
			}
		})
	}
	back, k, err := parseSigningKey(formatSigningKey("ed25519:r1", key))
	if err != nil || back != "ed25519:r1" || !k.Equal(key) {
		t.Fatalf("format then parse: %s %v", back, err)
	}
}

// TestSelfSignedCertificate: a name that is an IP address gets it and both
// loopback addresses as names; a DNS name gets itself. The certificate is
// made once and kept.
func TestSelfSignedCertificate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		server   string
		wantIPs  []string
		wantDNS  []string
		verifyAs string
	}{
		{"127.0.0.1:8448", []string{"127.0.0.1", "::1"}, nil, "127.0.0.1"},
		{"[::1]:8448", []string{"::1", "127.0.0.1"}, nil, "::1"},
		{"10.1.2.3", []string{"10.1.2.3", "127.0.0.1", "::1"}, nil, "10.1.2.3"},
		{"matrix.example.org:8448", nil, []string{"matrix.example.org"}, "matrix.example.org"},
	} {
		t.Run(tc.server, func(t *testing.T) {
			dir := t.TempDir()
			cert, err := loadCertificate(dir, "", "", tc.server)
			if err != nil {
				t.Fatal(err)
			}
			leaf, err := x509.ParseCertificate(cert.Certificate[0])
			if err != nil {
				t.Fatal(err)
			}
			var ips []string
			for _, ip := range leaf.IPAddresses {
				ips = append(ips, ip.String())
			}
			slices.Sort(ips)
			want := slices.Sorted(slices.Values(tc.wantIPs))
			if !slices.Equal(ips, want) || !slices.Equal(leaf.DNSNames, tc.wantDNS) {
				t.Fatalf("names %v %v, want %v %v", ips, leaf.DNSNames, want, tc.wantDNS)
			}
			roots := x509.NewCertPool()
			roots.AddCert(leaf)
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: tc.verifyAs, Roots: roots, CurrentTime: time.Now().AddDate(9, 0, 0)}); err != nil {
				t.Fatalf("verify as %s: %v", tc.verifyAs, err)
			}
			again, err := loadCertificate(dir, "", "", tc.server)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(again.Certificate[0], cert.Certificate[0]) {
				t.Fatal("the second load made another certificate")
			}
			for _, f := range []string{certFile, keyFile} {
				if info, err := os.Stat(filepath.Join(dir, f)); err != nil || info.Mode().Perm() != 0o600 {
					t.Fatalf("%s: %v %v", f, info.Mode(), err)
				}
			}
		})
	}
}

// TestConfiguredCertificate: given files are used as they are, and a bad
// pair names the keys it came from.
func TestConfiguredCertificate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certPEM, keyPEM, err := selfSigned("given.example", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cp, kp := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	_ = os.WriteFile(cp, certPEM, 0o600)
	_ = os.WriteFile(kp, keyPEM, 0o600)
	cert, err := loadCertificate(t.TempDir(), cp, kp, "other.example")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := tls.X509KeyPair(certPEM, keyPEM)
	if !slices.Equal(cert.Certificate[0], want.Certificate[0]) {
		t.Fatal("the configured certificate was not used")
	}
	_, err = loadCertificate(t.TempDir(), kp, cp, "other.example")
	if err == nil || !strings.Contains(err.Error(), "federation.tls_cert") {
		t.Fatalf("swapped files: %v", err)
	}
	if _, err := loadCertificate(t.TempDir(), "", "", "not a name"); err == nil {
		t.Fatal("made a certificate for a bad server name")
	}
}
