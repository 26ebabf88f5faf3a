package api_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"persona/config"
	"persona/internal/testnode"
)

// do sends one request and decodes the JSON answer.
func do(t *testing.T, method, url, token, ctype string, body string) (int, map[string]any, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out, resp.Header
}

func TestBadInputGetsMatrixErrors(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", func(c *config.Config) { c.Limits.MaxRequestBytes = 4096 })
	alice := n.Register("alice")
	n.Register("bob")
	tok := alice.AccessToken
	v3 := n.URL + "/_matrix/client/v3"
	me := v3 + "/profile/@alice:" + testnode.ServerName
	for _, tc := range []struct {
		name, method, url, token, body string
		wantStatus                     int
		wantCode                       string
	}{
		{"no token", "PUT", me + "/displayname", "", `{"displayname":"x"}`, 401, "M_MISSING_TOKEN"},
		{"bad token", "PUT", me + "/displayname", "pt_nonsense", `{"displayname":"x"}`, 401, "M_UNKNOWN_TOKEN"},
		{"token of unknown user", "PUT", me + "/displayname", "pt_QHpvcnA6cGVyc29uYS50ZXN0_abc", `{"displayname":"x"}`, 401, "M_UNKNOWN_TOKEN"},
		{"not json", "PUT", me + "/displayname", tok, `{"displayname":`, 400, "M_NOT_JSON"},
		{"json array", "PUT", me + "/displayname", tok, `["x"]`, 400, "M_BAD_JSON"},
		{"missing property", "PUT", me + "/displayname", tok, `{"avatar_url":"mxc://a/b"}`, 400, "M_MISSING_PARAM"},
		{"displayname not a string", "PUT", me + "/displayname", tok, `{"displayname":7}`, 400, "M_INVALID_PARAM"},
		{"displayname too long", "PUT", me + "/displayname", tok, `{"displayname":"` + strings.Repeat("é", 257) + `"}`, 400, "M_INVALID_PARAM"},
		{"avatar not mxc", "PUT", me + "/avatar_url", tok, `{"avatar_url":"https://evil/x.png"}`, 400, "M_INVALID_PARAM"},
		{"avatar mxc without id", "PUT", me + "/avatar_url", tok, `{"avatar_url":"mxc://server"}`, 400, "M_INVALID_PARAM"},
		{"avatar mxc bad id", "PUT", me + "/avatar_url", tok, `{"avatar_url":"mxc://server/../etc"}`, 400, "M_INVALID_PARAM"},
		{"key bad grammar", "PUT", me + "/Bad.Key", tok, `{"Bad.Key":1}`, 400, "M_INVALID_PARAM"},
		{"key too large", "PUT", me + "/" + strings.Repeat("k", 256), tok, `{}`, 400, "M_KEY_TOO_LARGE"},
		{"body too large", "PUT", me + "/com.example.big", tok, `{"com.example.big":"` + strings.Repeat("x", 5000) + `"}`, 413, "M_TOO_LARGE"},
		{"someone else's profile", "PUT", v3 + "/profile/@bob:" + testnode.ServerName + "/displayname", tok, `{"displayname":"x"}`, 403, "M_FORBIDDEN"},
		{"remote user's profile", "PUT", v3 + "/profile/@bob:elsewhere.org/displayname", tok, `{"displayname":"x"}`, 403, "M_FORBIDDEN"},
		{"invalid user id", "GET", v3 + "/profile/alice", "", "", 400, "M_INVALID_PARAM"},
		{"invalid user id in write", "PUT", v3 + "/profile/@:" + "/displayname", tok, `{"displayname":"x"}`, 400, "M_INVALID_PARAM"},
		{"unknown user", "GET", v3 + "/profile/@nobody:" + testnode.ServerName, "", "", 404, "M_NOT_FOUND"},
		{"unset field", "GET", me + "/com.example.none", "", "", 404, "M_NOT_FOUND"},
		{"bad propagate_to", "PUT", me + "/displayname?propagate_to=some", tok, `{"displayname":"x"}`, 400, "M_INVALID_PARAM"},
		{"bad propagate", "PUT", me + "/displayname?org.matrix.msc4069.propagate=nope", tok, `{"displayname":"x"}`, 400, "M_INVALID_PARAM"},
		{"unknown endpoint", "GET", v3 + "/no/such/thing", "", "", 404, "M_UNRECOGNIZED"},
		{"wrong method", "PATCH", me + "/displayname", tok, "", 405, "M_UNRECOGNIZED"},
		{"register closed kind guest", "POST", v3 + "/register?kind=guest", "", `{}`, 403, "M_GUEST_ACCESS_FORBIDDEN"},
		{"register bad username", "POST", v3 + "/register", "", `{"username":"a!b","password":"p","auth":{"type":"m.login.dummy"}}`, 400, "M_INVALID_USERNAME"},
		{"register taken", "POST", v3 + "/register", "", `{"username":"alice","password":"p","auth":{"type":"m.login.dummy"}}`, 400, "M_USER_IN_USE"},
		{"register wrong type", "POST", v3 + "/register", "", `{"username":7}`, 400, "M_BAD_JSON"},
		{"login unknown type", "POST", v3 + "/login", "", `{"type":"m.login.magic"}`, 400, "M_UNKNOWN"},
		{"login unknown user", "POST", v3 + "/login", "", `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"ghost"},"password":"x"}`, 403, "M_FORBIDDEN"},
		{"media traversal", "GET", n.URL + "/_matrix/media/v3/download/" + testnode.ServerName + "/..%2F..%2Fetc", "", "", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body, _ := do(t, tc.method, tc.url, tc.token, "application/json", tc.body)
			if tc.wantStatus == 0 { // any 4xx with an errcode
				if status < 400 || status >= 500 || body["errcode"] == nil {
					t.Fatalf("status %d body %v, want a 4xx Matrix error", status, body)
				}
				return
			}
			if status != tc.wantStatus || body["errcode"] != tc.wantCode || body["error"] == nil {
				t.Fatalf("got %d %v, want %d %s", status, body, tc.wantStatus, tc.wantCode)
			}
		})
	}
}

func TestProfileSizeLimit(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", nil)
	tok := n.Register("big").AccessToken
	me := n.URL + "/_matrix/client/v3/profile/@big:" + testnode.ServerName
	half := `"` + strings.Repeat("x", 40000) + `"`
	if s, b, _ := do(t, "PUT", me+"/com.example.a", tok, "", `{"com.example.a":`+half+`}`); s != 200 {
		t.Fatalf("first field: %d %v", s, b)
	}
	if s, b, _ := do(t, "PUT", me+"/com.example.b", tok, "", `{"com.example.b":`+half+`}`); s != 400 || b["errcode"] != "M_PROFILE_TOO_LARGE" {
		t.Fatalf("second field: %d %v", s, b)
	}
	// Replacing the big field with a small one is fine.
	if s, b, _ := do(t, "PUT", me+"/com.example.a", tok, "", `{"com.example.a":1}`); s != 200 {
		t.Fatalf("shrink: %d %v", s, b)
	}
}

func TestRateLimitAndAdminExemption(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", func(c *config.Config) {
		c.Profile.RateLimit.Burst = 3
		c.Profile.RateLimit.PerSecond = 0.1
	})
	tok := n.Register("fast").AccessToken
	me := n.URL + "/_matrix/client/v3/profile/@fast:" + testnode.ServerName + "/displayname"
	for i := 0; i < 3; i++ {
		if s, b, _ := do(t, "PUT", me, tok, "", `{"displayname":"n"}`); s != 200 {
			t.Fatalf("write %d: %d %v", i, s, b)
		}
	}
	s, b, h := do(t, "PUT", me, tok, "", `{"displayname":"n"}`)
	if s != 429 || b["errcode"] != "M_LIMIT_EXCEEDED" || h.Get("Retry-After") == "" {
		t.Fatalf("4th write: %d %v Retry-After=%q", s, b, h.Get("Retry-After"))
	}
	admin := registerShared(t, n, "root", true)
	for i := 0; i < 6; i++ {
		url := n.URL + "/_matrix/client/v3/profile/@fast:" + testnode.ServerName + "/displayname"
		if s, b, _ := do(t, "PUT", url, admin, "", `{"displayname":"set by admin"}`); s != 200 {
			t.Fatalf("admin write %d: %d %v", i, s, b)
		}
	}
}

// registerShared registers through Synapse's shared-secret API.
func registerShared(t *testing.T, n *testnode.Node, name string, admin bool) string {
	t.Helper()
	_, nb, _ := do(t, "GET", n.URL+"/_synapse/admin/v1/register", "", "", "")
	nonce := nb["nonce"].(string)
	role := "notadmin"
	if admin {
		role = "admin"
	}
	m := hmac.New(sha1.New, []byte(n.Config.Registration.SharedSecret))
	m.Write([]byte(nonce + "\x00" + name + "\x00pw\x00" + role))
	body, _ := json.Marshal(map[string]any{"nonce": nonce, "username": name, "password": "pw", "admin": admin, "mac": hex.EncodeToString(m.Sum(nil))})
	s, b, _ := do(t, "POST", n.URL+"/_synapse/admin/v1/register", "", "", string(body))
	if s != 200 {
		t.Fatalf("shared-secret register: %d %v", s, b)
	}
	// A nonce is single-use.
	if s, b, _ := do(t, "POST", n.URL+"/_synapse/admin/v1/register", "", "", string(body)); s != 400 {
		t.Fatalf("reused nonce: %d %v", s, b)
	}
	return b["access_token"].(string)
}

func TestSharedSecretWrongMAC(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", nil)
	_, nb, _ := do(t, "GET", n.URL+"/_synapse/admin/v1/register", "", "", "")
	body := `{"nonce":"` + nb["nonce"].(string) + `","username":"eve","password":"pw","admin":true,"mac":"00"}`
	if s, b, _ := do(t, "POST", n.URL+"/_synapse/admin/v1/register", "", "", body); s != 403 || b["errcode"] != "M_FORBIDDEN" {
		t.Fatalf("wrong mac: %d %v", s, b)
	}
}

func TestRegistrationClosedAndRequireAuth(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", func(c *config.Config) {
		c.Registration.Open = false
		c.Profile.RequireAuth = true
	})
	s, b, _ := do(t, "POST", n.URL+"/_matrix/client/v3/register", "", "", `{"username":"x","password":"p","auth":{"type":"m.login.dummy"}}`)
	if s != 403 || b["errcode"] != "M_FORBIDDEN" {
		t.Fatalf("closed registration: %d %v", s, b)
	}
	tok := registerShared(t, n, "carol", false)
	url := n.URL + "/_matrix/client/v3/profile/@carol:" + testnode.ServerName
	if s, b, _ := do(t, "GET", url, "", "", ""); s != 401 || b["errcode"] != "M_MISSING_TOKEN" {
		t.Fatalf("profile read without token: %d %v", s, b)
	}
	if s, _, _ := do(t, "GET", url, tok, "", ""); s != 200 {
		t.Fatalf("profile read with token: %d", s)
	}
}

func TestKeysFilterAndAvatarUpload(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", nil)
	tok := n.Register("dora").AccessToken
	me := n.URL + "/_matrix/client/v3/profile/@dora:" + testnode.ServerName
	do(t, "PUT", me+"/m.tz", tok, "", `{"m.tz":"Europe/Paris"}`)
	do(t, "PUT", me+"/com.example.x", tok, "", `{"com.example.x":true}`)
	_, b, _ := do(t, "GET", me+"?keys=displayname,m.tz", "", "", "")
	if len(b) != 2 || b["displayname"] != "dora" || b["m.tz"] != "Europe/Paris" {
		t.Fatalf("?keys = %v", b)
	}
	png := []byte("\x89PNG\r\n\x1a\n not really a png")
	req, _ := http.NewRequest("PUT", me+"/avatar_url", bytes.NewReader(png))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "image/png")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(out["avatar_url"], "mxc://"+testnode.ServerName+"/") {
		t.Fatalf("avatar upload: %d %v", resp.StatusCode, out)
	}
	if _, b, _ := do(t, "GET", me+"/avatar_url", "", "", ""); b["avatar_url"] != out["avatar_url"] {
		t.Fatalf("avatar after upload = %v", b)
	}
	// The unstable MSC4133 path is an alias.
	if s, b, _ := do(t, "GET", n.URL+"/_matrix/client/unstable/uk.tcpip.msc4133/profile/@dora:"+testnode.ServerName+"/m.tz", "", "", ""); s != 200 || b["m.tz"] != "Europe/Paris" {
		t.Fatalf("unstable alias: %d %v", s, b)
	}
}
