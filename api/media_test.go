package api_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"persona/config"
	"persona/internal/testnode"
)

// mediaTestServer is a real node (store, media, actors, API) on loopback,
// with one registered user.
type mediaTestServer struct {
	t     *testing.T
	url   string
	token string
}

// mediaTestUploadLimit keeps the too-large test cheap.
const mediaTestUploadLimit = 1 << 20

// mediaIDPattern is the grammar of media ids in paths.
var mediaIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,255}$`)

// mediaCSP is the Content-Security-Policy media is served with.
const mediaCSP = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; " +
	"style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"

// serverName is the test node's server name; mxcPrefix starts the content URI
// of its media.
const (
	serverName = testnode.ServerName
	mxcPrefix  = "mxc://" + serverName + "/"
)

func newMediaTestServer(t *testing.T) *mediaTestServer {
	t.Helper()
	n := testnode.Start(t, "", func(c *config.Config) { c.Limits.MaxUploadBytes = mediaTestUploadLimit })
	return &mediaTestServer{t: t, url: n.URL, token: n.Register("alice").AccessToken}
}

// with returns s reporting to t (a subtest).
func (s *mediaTestServer) with(t *testing.T) *mediaTestServer {
	c := *s
	c.t = t
	return &c
}

// do sends a request (body a string or []byte; contentType "" sends none).
func (s *mediaTestServer) do(method, path, token, contentType string, body any) (*http.Response, []byte) {
	s.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	case io.Reader:
		rd = b
	}
	req, err := http.NewRequest(method, s.url+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return resp, out
}

// json sends a request, checks the status and decodes the answer into v.
func (s *mediaTestServer) json(method, path, token string, status int, body any, v any) {
	s.t.Helper()
	resp, out := s.do(method, path, token, "application/json", body)
	if resp.StatusCode != status {
		s.t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, status, out)
	}
	if v != nil {
		if err := json.Unmarshal(out, v); err != nil {
			s.t.Fatalf("%s %s: %v: %s", method, path, err, out)
		}
	}
}

// wantError checks a Matrix error answer.
func (s *mediaTestServer) wantError(resp *http.Response, out []byte, status int, code string) {
	s.t.Helper()
	var e struct{ Errcode string }
	_ = json.Unmarshal(out, &e)
	if resp.StatusCode != status || e.Errcode != code {
		s.t.Fatalf("%s: got %d %s, want %d %s", resp.Request.URL.Path, resp.StatusCode, out, status, code)
	}
}

// upload posts body and returns the media id of the answer's content_uri.
func (s *mediaTestServer) upload(body []byte, contentType, filename string) string {
	s.t.Helper()
	resp, out := s.do("POST", "/_matrix/media/v3/upload?filename="+filename, s.token, contentType, body)
	var r struct {
		ContentURI string `json:"content_uri"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(out, &r) != nil || !strings.HasPrefix(r.ContentURI, mxcPrefix) {
		s.t.Fatalf("upload: %d %s", resp.StatusCode, out)
	}
	return strings.TrimPrefix(r.ContentURI, mxcPrefix)
}

// TestMedia runs the end-to-end media tests against one node: registering
// a user is slow (bcrypt), more so under -race. The subtests share the node
// and nothing else.
func TestMedia(t *testing.T) {
	t.Parallel()
	s := newMediaTestServer(t)
	for _, c := range []struct {
		name string
		f    func(*testing.T, *mediaTestServer)
	}{
		{"UploadDownload", testMediaUploadDownload}, {"DedupAndUnsafeTypes", testMediaDedupAndUnsafeTypes},
		{"LimitsAndBadInput", testMediaLimitsAndBadInput}, {"CreateThenUpload", testMediaCreateThenUpload},
		{"Thumbnail", testMediaThumbnail}, {"ThumbnailBomb", testMediaThumbnailBomb},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.f(t, s.with(t))
		})
	}
}

func testMediaUploadDownload(t *testing.T, s *mediaTestServer) {
	body := []byte("hello, media")
	id := s.upload(body, "text/plain; charset=utf-8", "hello.txt")
	if !mediaIDPattern.MatchString(id) || len(id) != 24 {
		t.Fatalf("media id %q", id)
	}
	for _, p := range []string{"/_matrix/client/v1/media/download/", "/_matrix/media/v3/download/", "/_matrix/media/r0/download/"} {
		p += serverName + "/" + id
		resp, out := s.do("GET", p, s.token, "", nil)
		h := resp.Header
		if resp.StatusCode != 200 || !bytes.Equal(out, body) {
			t.Fatalf("%s: %d %q", p, resp.StatusCode, out)
		}
		want := map[string]string{
			"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff",
			"Content-Disposition": `inline; filename=hello.txt`, "Content-Security-Policy": mediaCSP,
			"Cross-Origin-Resource-Policy": "cross-origin",
		}
		for k, v := range want {
			if h.Get(k) != v {
				t.Errorf("%s: %s = %q, want %q", p, k, h.Get(k), v)
			}
		}
	}
	// A file name in the path wins, RFC 6266-encoded.
	resp, _ := s.do("GET", "/_matrix/client/v1/media/download/"+serverName+"/"+id+"/h%C3%A9llo%20w.txt", s.token, "", nil)
	if cd := resp.Header.Get("Content-Disposition"); cd != `inline; filename*=utf-8''h%C3%A9llo%20w.txt` {
		t.Errorf("disposition %q", cd)
	}
	// Empty bodies are allowed; no Content-Type means octet-stream.
	id = s.upload(nil, "", "")
	resp, out := s.do("GET", "/_matrix/media/v3/download/"+serverName+"/"+id, "", "", nil)
	if resp.StatusCode != 200 || len(out) != 0 || resp.Header.Get("Content-Type") != "application/octet-stream" ||
		resp.Header.Get("Content-Disposition") != "attachment" {
		t.Fatalf("empty: %d %q %v", resp.StatusCode, out, resp.Header)
	}
}

func testMediaDedupAndUnsafeTypes(t *testing.T, s *mediaTestServer) {
	html := []byte("<html><script>alert(1)</script></html>")
	a, b := s.upload(html, "text/html", "x.html"), s.upload(html, "text/html", "y.html")
	if a == b {
		t.Fatal("same media id twice")
	}
	// Both ids name one content: the etag is its SHA-256.
	sum := sha256.Sum256(html)
	for _, id := range []string{a, b} {
		resp, _ := s.do("GET", "/_matrix/media/v3/download/"+serverName+"/"+id, "", "", nil)
		if etag := resp.Header.Get("ETag"); etag != `"`+hex.EncodeToString(sum[:])+`"` {
			t.Errorf("%s: etag %s", id, etag)
		}
	}
	for _, ct := range []string{"text/html", "image/svg+xml", "application/javascript", "text/xml"} {
		id := s.upload(html, ct, "")
		resp, _ := s.do("GET", "/_matrix/media/v3/download/"+serverName+"/"+id+"/page.html", "", "", nil)
		if resp.Header.Get("Content-Type") != "application/octet-stream" ||
			resp.Header.Get("Content-Disposition") != `attachment; filename=page.html` {
			t.Errorf("%s served as %v", ct, resp.Header)
		}
	}
}

func testMediaLimitsAndBadInput(t *testing.T, s *mediaTestServer) {
	big := make([]byte, mediaTestUploadLimit+1)
	resp, out := s.do("POST", "/_matrix/media/v3/upload", s.token, "image/png", big)
	s.wantError(resp, out, 413, "M_TOO_LARGE")
	// Without a Content-Length (chunked) the reader enforces the limit.
	resp, out = s.do("POST", "/_matrix/media/v3/upload", s.token, "image/png", io.MultiReader(bytes.NewReader(big)))
	s.wantError(resp, out, 413, "M_TOO_LARGE")
	resp, out = s.do("POST", "/_matrix/media/v3/upload", "", "image/png", "x")
	s.wantError(resp, out, 401, "M_MISSING_TOKEN")
	id := s.upload([]byte("x"), "", "")
	resp, out = s.do("GET", "/_matrix/client/v1/media/download/"+serverName+"/"+id, "", "", nil)
	s.wantError(resp, out, 401, "M_MISSING_TOKEN")

	for _, p := range []string{
		"/_matrix/media/v3/download/" + serverName + "/..%2F..%2Fetc%2Fpasswd",
		"/_matrix/media/v3/download/" + serverName + "/a%2Fb",
		"/_matrix/media/v3/download/..%2F/abc",
		"/_matrix/media/v3/download/" + serverName + "/%00",
		"/_matrix/media/v3/download/" + serverName + "/" + strings.Repeat("a", 256),
		"/_matrix/media/v3/download/" + serverName + "/doesnotexist",
		"/_matrix/media/v3/download/other.example/" + id,
		"/_matrix/client/v1/media/thumbnail/" + serverName + "/a%2F..?width=1&height=1",
	} {
		resp, out := s.do("GET", p, s.token, "", nil)
		var e struct{ Errcode string }
		if resp.StatusCode < 400 || resp.StatusCode >= 500 || json.Unmarshal(out, &e) != nil || e.Errcode == "" {
			t.Errorf("%s: %d %s", p, resp.StatusCode, out)
		}
	}
	// Literal dot segments are cleaned (and redirected) by the mux before
	// routing; they must still never reach a handler nor fail.
	resp, out = s.do("GET", "/_matrix/media/v3/download/"+serverName+"/../../id", "", "", nil)
	if resp.StatusCode < 300 || resp.StatusCode >= 500 || !bytes.Contains(out, []byte("errcode")) {
		t.Errorf("dot segments: %d %s", resp.StatusCode, out)
	}
	var cfg map[string]int64
	s.json("GET", "/_matrix/client/v1/media/config", s.token, 200, nil, &cfg)
	if cfg["m.upload.size"] != mediaTestUploadLimit {
		t.Errorf("config %v", cfg)
	}
	s.json("GET", "/_matrix/media/v3/config", s.token, 200, nil, &cfg)
	if cfg["m.upload.size"] != mediaTestUploadLimit {
		t.Errorf("legacy config %v", cfg)
	}
}

func testMediaCreateThenUpload(t *testing.T, s *mediaTestServer) {
	var c struct {
		ContentURI      string `json:"content_uri"`
		UnusedExpiresAt int64  `json:"unused_expires_at"`
	}
	s.json("POST", "/_matrix/media/v1/create", s.token, 200, "", &c)
	id := strings.TrimPrefix(c.ContentURI, mxcPrefix)
	if c.UnusedExpiresAt <= time.Now().UnixMilli() || !mediaIDPattern.MatchString(id) {
		t.Fatalf("create: %+v", c)
	}
	resp, out := s.do("GET", "/_matrix/media/v3/download/"+serverName+"/"+id+"?timeout_ms=200", "", "", nil)
	s.wantError(resp, out, 504, "M_NOT_YET_UPLOADED")

	// A download waiting when the content arrives gets it.
	var wg sync.WaitGroup
	var got []byte
	var status int
	wg.Go(func() {
		resp, out := s.do("GET", "/_matrix/client/v1/media/download/"+serverName+"/"+id+"?timeout_ms=3000", s.token, "", nil)
		got, status = out, resp.StatusCode
	})
	time.Sleep(150 * time.Millisecond)
	s.json("PUT", "/_matrix/media/v3/upload/"+serverName+"/"+id, s.token, 200, "late content", nil)
	wg.Wait()
	if status != 200 || string(got) != "late content" {
		t.Fatalf("waiting download: %d %q", status, got)
	}
	resp, out = s.do("PUT", "/_matrix/media/v3/upload/"+serverName+"/"+id, s.token, "text/plain", "again")
	s.wantError(resp, out, 409, "M_CANNOT_OVERWRITE_MEDIA")
	resp, out = s.do("PUT", "/_matrix/media/v3/upload/"+serverName+"/AAAAAAAAAAAAAAAAAAAAAAAA", s.token, "text/plain", "x")
	s.wantError(resp, out, 404, "M_NOT_FOUND")

	// Another user may not fill someone else's reservation.
	var bob struct {
		AccessToken string `json:"access_token"`
	}
	s.json("POST", "/_matrix/client/v3/register", "", 200,
		`{"username":"bob","password":"secretpw12","auth":{"type":"m.login.dummy"}}`, &bob)
	s.json("POST", "/_matrix/media/v1/create", s.token, 200, "", &c)
	resp, out = s.do("PUT", "/_matrix/media/v3/upload/"+serverName+"/"+strings.TrimPrefix(c.ContentURI, mxcPrefix),
		bob.AccessToken, "text/plain", "x")
	s.wantError(resp, out, 403, "M_FORBIDDEN")
}
