package dendrite

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// registerPath is the shared-secret registration API, as Synapse defines it.
const registerPath = "/_synapse/admin/v1/register"

// Register creates the user localpart with password through the
// shared-secret admin API and returns a mautrix client logged in as that
// user on the peer's client URL. It fails t when registration fails.
func (s *Server) Register(t testing.TB, localpart, password string) *mautrix.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hc := &http.Client{Timeout: 30 * time.Second}

	var nonce struct {
		Nonce string `json:"nonce"`
	}
	if err := call(ctx, hc, http.MethodGet, s.ClientURL+registerPath, nil, &nonce); err != nil {
		t.Fatalf("register %s on %s: get nonce: %v", localpart, s.ServerName, err)
	}
	req := map[string]any{
		"nonce":    nonce.Nonce,
		"username": localpart,
		"password": password,
		"admin":    false,
		"mac":      registrationMAC(s.secret, nonce.Nonce, localpart, password, false),
	}
	var resp struct {
		UserID      id.UserID   `json:"user_id"`
		AccessToken string      `json:"access_token"`
		DeviceID    id.DeviceID `json:"device_id"`
	}
	if err := call(ctx, hc, http.MethodPost, s.ClientURL+registerPath, req, &resp); err != nil {
		t.Fatalf("register %s on %s: %v", localpart, s.ServerName, err)
	}
	if resp.AccessToken == "" {
		t.Fatalf("register %s on %s: no access token in the answer", localpart, s.ServerName)
	}
	cli, err := mautrix.NewClient(s.ClientURL, resp.UserID, resp.AccessToken)
	if err != nil {
		t.Fatalf("client for %s: %v", resp.UserID, err)
	}
	cli.DeviceID = resp.DeviceID
	// Long enough for a /sync long poll of 30 s.
	cli.Client = &http.Client{Timeout: 60 * time.Second}
	return cli
}

// registrationMAC returns the hex HMAC-SHA1, keyed by the shared secret, of
// nonce, user, password and "admin" or "notadmin", joined by NUL bytes.
func registrationMAC(secret, nonce, user, password string, admin bool) string {
	kind := "notadmin"
	if admin {
		kind = "admin"
	}
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(strings.Join([]string{nonce, user, password, kind}, "\x00")))
	return hex.EncodeToString(mac.Sum(nil))
}

// call sends body as JSON (none when nil) and decodes a 200 answer into out;
// any other status is an error carrying the answer's body.
func call(ctx context.Context, hc *http.Client, method, url string, body, out any) error {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, raw)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, url, err)
	}
	return nil
}
