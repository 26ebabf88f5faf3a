package node_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/png"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"persona/cluster"
	"persona/config"
	"persona/internal/testnode"
)

// TestMediaFromAnotherMember: media uploaded through a is downloaded and
// thumbnailed through b, which fetches it from a once; a media id no
// member holds is not found through either; an id a holds pending is not
// yet uploaded through b. a's route for members answers only from its own
// store. Once a is stopped, b serves its copy.
func TestMediaFromAnotherMember(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	small := func(tune func(*config.Config)) func(*config.Config) {
		return func(c *config.Config) {
			tune(c)
			c.Cluster.Partitions, c.Actors.Partitions, c.Cluster.ReplicationFactor = 8, 8, 1
		}
	}
	a := testnode.Start(t, "", small(inCluster("a", testnode.FreeAddr(t))))
	waitCluster(t, a, "a ready", func(ms map[string]cluster.Member) bool { return ms["a"].Ready })
	alice := a.Register("alice")
	var img bytes.Buffer
	if err := png.Encode(&img, image.NewGray(image.Rect(0, 0, 120, 80))); err != nil {
		t.Fatal(err)
	}
	up, err := alice.UploadBytesWithName(ctx, img.Bytes(), "image/png", "grey.png")
	if err != nil {
		t.Fatalf("upload through a: %v", err)
	}
	pending, err := alice.CreateMXC(ctx)
	if err != nil {
		t.Fatalf("create through a: %v", err)
	}
	shared, err := alice.UploadBytes(ctx, []byte("read by many at once"), "text/plain")
	if err != nil {
		t.Fatalf("upload through a: %v", err)
	}

	b := testnode.Start(t, "", small(inCluster("b", testnode.FreeAddr(t), a.Cluster().Addr())))
	waitCluster(t, b, "a ready with its API address", func(ms map[string]cluster.Member) bool {
		return ms["a"].Ready && ms["a"].APIAddr == a.ClientAddr() && ms["b"].Ready
	})
	legacy := "/_matrix/media/v3"
	mediaPath := up.ContentURI.Homeserver + "/" + up.ContentURI.FileID

	status, header, body := get(t, b.URL+legacy+"/download/"+mediaPath)
	if status != http.StatusOK || !bytes.Equal(body, img.Bytes()) || header.Get("Content-Type") != "image/png" ||
		header.Get("Content-Disposition") != `inline; filename=grey.png` {
		t.Fatalf("download through b: %d %v, %d bytes", status, header, len(body))
	}
	status, header, body = get(t, b.URL+legacy+"/thumbnail/"+mediaPath+"?width=32&height=32&method=scale")
	if status != http.StatusOK || header.Get("Content-Type") != "image/png" {
		t.Fatalf("thumbnail through b: %d %v", status, header)
	}
	if thumb, err := png.DecodeConfig(bytes.NewReader(body)); err != nil || thumb.Width != 32 {
		t.Fatalf("thumbnail through b: %+v %v", thumb, err)
	}

	for _, n := range []*testnode.Node{a, b} {
		if status, _, body := get(t, n.URL+legacy+"/download/"+testnode.ServerName+"/NoMemberHoldsThis"); status != http.StatusNotFound ||
			errcode(body) != "M_NOT_FOUND" {
			t.Errorf("an id no member holds, through %s: %d %s", n.ClusterName(), status, body)
		}
	}
	pendingPath := legacy + "/download/" + pending.ContentURI.Homeserver + "/" + pending.ContentURI.FileID + "?timeout_ms=200"
	if status, _, body := get(t, b.URL+pendingPath); status != http.StatusGatewayTimeout || errcode(body) != "M_NOT_YET_UPLOADED" {
		t.Errorf("an id a holds pending, through b: %d %s", status, body)
	}
	// Reads of one id at once all get it (sharing a fetch, or the copy).
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, _, body := get(t, b.URL+legacy+"/download/"+shared.ContentURI.Homeserver+"/"+shared.ContentURI.FileID)
			if status != http.StatusOK || string(body) != "read by many at once" {
				t.Errorf("a read at once through b: %d %q", status, body)
			}
		}()
	}
	wg.Wait()
	m := metricsOf(t, b)
	for _, sample := range []string{`persona_media_member_fetches_total{result="not_found"} 1`,
		`persona_media_member_fetches_total{result="not_yet_uploaded"} 1`} {
		if !strings.Contains(m, "\n"+sample+"\n") {
			t.Errorf("b's metrics lack %s", sample)
		}
	}
	if !strings.Contains(m, `persona_media_member_fetches_total{result="fetched"}`) ||
		strings.Contains(m, `persona_media_member_fetches_total{result="fetched"} 0`) {
		t.Errorf("b's metrics count no media fetched")
	}

	// The members' route answers from a's own store: no asking further.
	if status, _, _ := get(t, a.URL+"/_persona/cluster/v1/media/NoMemberHoldsThis"); status != http.StatusNotFound {
		t.Errorf("a's route for members, an id a does not hold: %d", status)
	}
	if status, header, body := get(t, a.URL+"/_persona/cluster/v1/media/"+up.ContentURI.FileID); status != http.StatusOK ||
		!bytes.Equal(body, img.Bytes()) || header.Get("X-Persona-Media-Record") == "" {
		t.Errorf("a's route for members, an id a holds: %d %v", status, header)
	}

	a.Stop()
	status, header, body = get(t, b.URL+legacy+"/download/"+mediaPath)
	if status != http.StatusOK || !bytes.Equal(body, img.Bytes()) || header.Get("Content-Type") != "image/png" {
		t.Fatalf("download through b with a stopped: %d %v", status, header)
	}
	// Another box is made from b's copy.
	if status, _, _ := get(t, b.URL+legacy+"/thumbnail/"+mediaPath+"?width=16&height=16&method=crop"); status != http.StatusOK {
		t.Fatalf("thumbnail through b with a stopped: %d", status)
	}
}

// get GETs url and returns the status, headers and body of the answer.
func get(t *testing.T, url string) (int, http.Header, []byte) {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// errcode is the errcode of a Matrix error body, or "".
func errcode(body []byte) string {
	var e struct {
		Errcode string `json:"errcode"`
	}
	_ = json.Unmarshal(body, &e)
	return e.Errcode
}

// TestMediaMembersHoldTheKey: with cluster.gossip_key_file, b fetches
// media a holds, proving it holds the key; a request on a's route for
// members from a member's host without the token, or with another key's,
// is refused 403.
func TestMediaMembersHoldTheKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	keyFile := filepath.Join(t.TempDir(), "gossip.key")
	key := bytes.Repeat([]byte{7}, 32)
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keyed := func(tune func(*config.Config)) func(*config.Config) {
		return func(c *config.Config) {
			tune(c)
			c.Cluster.Partitions, c.Actors.Partitions, c.Cluster.ReplicationFactor = 8, 8, 1
			c.Cluster.GossipKeyFile = keyFile
		}
	}
	a := testnode.Start(t, "", keyed(inCluster("a", testnode.FreeAddr(t))))
	waitCluster(t, a, "a ready", func(ms map[string]cluster.Member) bool { return ms["a"].Ready })
	alice := a.Register("alice")
	up, err := alice.UploadBytes(ctx, []byte("for members who hold the key"), "text/plain")
	if err != nil {
		t.Fatalf("upload through a: %v", err)
	}
	b := testnode.Start(t, "", keyed(inCluster("b", testnode.FreeAddr(t), a.Cluster().Addr())))
	waitCluster(t, b, "a ready with its API address", func(ms map[string]cluster.Member) bool {
		return ms["a"].Ready && ms["a"].APIAddr == a.ClientAddr() && ms["b"].Ready
	})
	if status, _, body := get(t, b.URL+"/_matrix/media/v3/download/"+up.ContentURI.Homeserver+"/"+up.ContentURI.FileID); status != http.StatusOK ||
		string(body) != "for members who hold the key" {
		t.Fatalf("download through b: %d %q", status, body)
	}
	route := a.URL + "/_persona/cluster/v1/media/" + up.ContentURI.FileID
	for _, token := range []string{"", cluster.PeerTokens([][]byte{bytes.Repeat([]byte{8}, 32)}, "persona cluster media peer v1")[0]} {
		req, err := http.NewRequest(http.MethodGet, route, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("X-Persona-Peer-Token", token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || errcode(body) != "M_FORBIDDEN" {
			t.Errorf("a's route for members, token %q: %d %s, want 403 M_FORBIDDEN", token, resp.StatusCode, body)
		}
	}
}
