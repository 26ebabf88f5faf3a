package federation

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// signingKeyFile is the file in the data directory holding the signing key
// unless federation.signing_key_file names another.
const signingKeyFile = "signing.key"

// pemKeyType is the PEM block type of Dendrite's matrix_key.pem.
const pemKeyType = "MATRIX PRIVATE KEY"

// loadIdentity reads the signing key in the file path, or makes one and
// writes it there (mode 0600) when there is none.
func loadIdentity(path string, name spec.ServerName) (*fclient.SigningIdentity, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		id, key := newSigningKey()
		err = createFileAtomic(path, formatSigningKey(id, key))
		if err == nil {
			return &fclient.SigningIdentity{ServerName: name, KeyID: id, PrivateKey: key}, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("write signing key: %w", err)
		}
		data, err = os.ReadFile(path) // another node sharing the file made it first
	}
	if err != nil {
		return nil, fmt.Errorf("read signing key: %w", err)
	}
	id, key, err := parseSigningKey(data)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	return &fclient.SigningIdentity{ServerName: name, KeyID: id, PrivateKey: key}, nil
}

// newSigningKey makes an ed25519 key with a random key ID.
func newSigningKey() (gomatrixserverlib.KeyID, ed25519.PrivateKey) {
	_, key, _ := ed25519.GenerateKey(nil) // crypto/rand never fails
	return gomatrixserverlib.KeyID("ed25519:" + rand.Text()[:8]), key
}

// formatSigningKey writes a key in Synapse's signing key format: one line
// "ed25519 <key ID without its algorithm> <unpadded base64 seed>".
func formatSigningKey(id gomatrixserverlib.KeyID, key ed25519.PrivateKey) []byte {
	version := strings.TrimPrefix(string(id), "ed25519:")
	return fmt.Appendf(nil, "ed25519 %s %s\n", version, base64.RawStdEncoding.EncodeToString(key.Seed()))
}

// parseSigningKey reads the first key of a signing key file in Synapse's
// format (see formatSigningKey) or Dendrite's PEM (a "MATRIX PRIVATE KEY"
// block whose Key-ID header names the key and whose bytes are its seed).
func parseSigningKey(data []byte) (gomatrixserverlib.KeyID, ed25519.PrivateKey, error) {
	var version, seed string
	if bytes.HasPrefix(bytes.TrimSpace(data), []byte("-----BEGIN")) {
		block, _ := pem.Decode(data)
		if block == nil || block.Type != pemKeyType {
			return "", nil, fmt.Errorf("want a PEM block of type %q", pemKeyType)
		}
		id, ok := strings.CutPrefix(block.Headers["Key-ID"], "ed25519:")
		if !ok {
			return "", nil, errors.New(`the PEM block's Key-ID header does not start with "ed25519:"`)
		}
		version, seed = id, base64.RawStdEncoding.EncodeToString(block.Bytes)
	} else {
		line, _, _ := strings.Cut(strings.TrimSpace(string(data)), "\n")
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "ed25519" {
			return "", nil, errors.New(`want "ed25519 <key version> <base64 seed>"`)
		}
		version, seed = f[1], f[2]
	}
	if version == "" || strings.Trim(version, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != "" {
		return "", nil, fmt.Errorf("key version %q: want letters, digits and _", version)
	}
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(seed, "="))
	if err != nil || len(b) != ed25519.SeedSize {
		return "", nil, fmt.Errorf("want a %d-byte seed in base64", ed25519.SeedSize)
	}
	return gomatrixserverlib.KeyID("ed25519:" + version), ed25519.NewKeyFromSeed(b), nil
}

// writeFileAtomic writes data to path (mode 0600) through a temporary file
// renamed over it once synced, so a crash leaves the old file or the new
// one, never a part.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := writeTemp(path, data)
	if err != nil {
		return err
	}
	defer os.Remove(tmp) // fails once renamed
	return os.Rename(tmp, path)
}

// createFileAtomic writes data to path as writeFileAtomic does, unless
// path exists: then it leaves the file as it is and returns an error
// matching os.ErrExist. Of processes sharing path that start together,
// one writes it and the others read what it wrote.
func createFileAtomic(path string, data []byte) error {
	tmp, err := writeTemp(path, data)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	return os.Link(tmp, path)
}

// writeTemp writes data (mode 0600) to a new synced file beside path and
// returns its name.
func writeTemp(path string, data []byte) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return "", err
	}
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}
