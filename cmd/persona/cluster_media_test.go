package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// TestClusterMediaThroughAnyNode starts three `persona serve` processes
// with cluster.enabled on hosts of their own. An image uploaded through n1
// is downloaded and thumbnailed through n2 and n3, on the authenticated
// (v1) and the legacy endpoints, with the bytes and content type of the
// upload; a media id no node holds is M_NOT_FOUND through every node. An
// id created through n1 is filled through n2, once, and read through n3.
// Once n1 is stopped, n2 serves the copy it fetched.
func TestClusterMediaThroughAnyNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	start := time.Now()
	procs, nt := newClusterOfProcesses(t, 3)
	n1, n2, n3 := procs[0], procs[1], procs[2]
	startReady(t, procs, 20*time.Second)
	t.Logf("hosts of their own: %v; three nodes ready in %s", nt.Isolated, time.Since(start).Round(time.Millisecond))
	ctx := context.Background()
	_, clients := userOwnedBy(t, ctx, procs, "media", n1.name, n1)

	img := gradientPNG(t, 300, 200)
	up, err := clients[n1.name].UploadBytesWithName(ctx, img, "image/png", "gradient.png")
	if err != nil {
		t.Fatalf("upload through n1: %v", err)
	}
	mxc := up.ContentURI
	for _, p := range []*clusterProc{n2, n3} {
		began := time.Now()
		resp, err := clients[p.name].Download(ctx, mxc)
		if err != nil {
			t.Fatalf("v1 download through %s: %v", p.name, err)
		}
		body := readAll(t, resp)
		if !bytes.Equal(body, img) || resp.Header.Get("Content-Type") != "image/png" {
			t.Fatalf("v1 download through %s: %s, %d bytes", p.name, resp.Header.Get("Content-Type"), len(body))
		}
		t.Logf("first download through %s, fetched from n1: %s", p.name, time.Since(began).Round(time.Millisecond))
		status, ct, body := legacyGet(t, p, "/download/"+mxc.Homeserver+"/"+mxc.FileID)
		if status != http.StatusOK || ct != "image/png" || !bytes.Equal(body, img) {
			t.Fatalf("legacy download through %s: %d %s, %d bytes", p.name, status, ct, len(body))
		}

		resp, err = clients[p.name].DownloadThumbnail(ctx, mxc, 50, 50, mautrix.DownloadThumbnailExtra{Method: "scale"})
		if err != nil {
			t.Fatalf("v1 thumbnail through %s: %v", p.name, err)
		}
		checkThumbnail(t, "v1 thumbnail through "+p.name, resp.Header.Get("Content-Type"), readAll(t, resp), 50)
		status, ct, body = legacyGet(t, p, "/thumbnail/"+mxc.Homeserver+"/"+mxc.FileID+"?width=32&height=32&method=crop")
		if status != http.StatusOK {
			t.Fatalf("legacy thumbnail through %s: %d", p.name, status)
		}
		checkThumbnail(t, "legacy thumbnail through "+p.name, ct, body, 32)
	}

	missing := id.ContentURI{Homeserver: mxc.Homeserver, FileID: "NoNodeHoldsThisMedia"}
	for _, p := range procs {
		if _, err := clients[p.name].Download(ctx, missing); !errors.Is(err, mautrix.MNotFound) {
			t.Errorf("v1 download of a media id no node holds, through %s: %v, want M_NOT_FOUND", p.name, err)
		}
		status, _, body := legacyGet(t, p, "/download/"+missing.Homeserver+"/"+missing.FileID)
		var e struct{ Errcode string }
		if _ = json.Unmarshal(body, &e); status != http.StatusNotFound || e.Errcode != "M_NOT_FOUND" {
			t.Errorf("legacy download of a media id no node holds, through %s: %d %s", p.name, status, body)
		}
	}

	// An id created through n1 is filled through n2 (passed on to n1),
	// once, and read through n3.
	created, err := clients[n1.name].CreateMXC(ctx)
	if err != nil {
		t.Fatalf("create through n1: %v", err)
	}
	later := []byte("filled through another node")
	fill := mautrix.ReqUploadMedia{ContentBytes: later, ContentType: "text/plain", FileName: "later.txt", MXC: created.ContentURI}
	if _, err := clients[n2.name].UploadMedia(ctx, fill); err != nil {
		t.Fatalf("fill n1's id through n2: %v", err)
	}
	var again mautrix.HTTPError
	if _, err := clients[n3.name].UploadMedia(ctx, fill); !errors.As(err, &again) || again.RespError == nil ||
		again.RespError.ErrCode != "M_CANNOT_OVERWRITE_MEDIA" {
		t.Errorf("fill n1's id again through n3: %v, want M_CANNOT_OVERWRITE_MEDIA", err)
	}
	if body, err := clients[n3.name].DownloadBytes(ctx, created.ContentURI); err != nil || !bytes.Equal(body, later) {
		t.Errorf("read the filled id through n3: %q %v", body, err)
	}
	unreserved := mautrix.ReqUploadMedia{ContentBytes: later, ContentType: "text/plain", MXC: missing}
	if _, err := clients[n2.name].UploadMedia(ctx, unreserved); !errors.Is(err, mautrix.MNotFound) {
		t.Errorf("fill an id no node reserved, through n2: %v, want M_NOT_FOUND", err)
	}

	if err := n1.child.terminate(30 * time.Second); err != nil {
		t.Fatalf("n1 after SIGTERM: %v", err)
	}
	status, ct, body := legacyGet(t, n2, "/download/"+mxc.Homeserver+"/"+mxc.FileID)
	if status != http.StatusOK || ct != "image/png" || !bytes.Equal(body, img) {
		t.Fatalf("download through n2 with n1 stopped: %d %s, %d bytes", status, ct, len(body))
	}
}

// gradientPNG is a w×h PNG image.
func gradientPNG(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), 200, 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// legacyGet GETs path under p's /_matrix/media/v3, with no access token,
// and returns the status, content type and body of the answer.
func legacyGet(t *testing.T, p *clusterProc, path string) (int, string, []byte) {
	t.Helper()
	resp, err := httpClient.Get(p.base() + "/_matrix/media/v3" + path)
	if err != nil {
		t.Fatalf("GET %s through %s: %v", path, p.name, err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), readAll(t, resp)
}

// readAll reads and closes resp's body.
func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkThumbnail fails unless body is a PNG image whose larger side is box.
func checkThumbnail(t *testing.T, what, contentType string, body []byte, box int) {
	t.Helper()
	c, err := png.DecodeConfig(bytes.NewReader(body))
	if err != nil || contentType != "image/png" || max(c.Width, c.Height) != box {
		t.Fatalf("%s: %s, %dx%d, %v", what, contentType, c.Width, c.Height, err)
	}
}
