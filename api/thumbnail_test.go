package api_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"testing"
)

// testImage encodes a 400x200 gradient as format ("png" or "jpeg").
func testImage(t *testing.T, format string) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 400, 200))
	for y := range 200 {
		for x := range 400 {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), 128, 255})
		}
	}
	var b bytes.Buffer
	var err error
	if format == "png" {
		err = png.Encode(&b, img)
	} else {
		err = jpeg.Encode(&b, img, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func testMediaThumbnail(t *testing.T, s *mediaTestServer) {
	for _, format := range []string{"png", "jpeg"} {
		src := testImage(t, format)
		id := s.upload(src, "image/"+format, "")
		sum := sha256.Sum256(src)
		for _, c := range []struct {
			query, etag string
			w, h        int
		}{
			{"width=100&height=100", "100x100-scale", 100, 50},
			{"width=100&height=100&method=scale", "100x100-scale", 100, 50},
			{"width=100&height=100&method=crop", "100x100-crop", 100, 100},
			{"width=1000&height=1000&method=crop", "1000x1000-crop", 200, 200}, // never upscaled
		} {
			for _, p := range []string{"/_matrix/client/v1/media/thumbnail/", "/_matrix/media/v3/thumbnail/"} {
				resp, out := s.do("GET", p+serverName+"/"+id+"?"+c.query, s.token, "", nil)
				if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/"+format {
					t.Fatalf("%s %s: %d %v", format, c.query, resp.StatusCode, resp.Header)
				}
				if etag := resp.Header.Get("ETag"); etag != `"`+hex.EncodeToString(sum[:])+"-"+c.etag+`"` {
					t.Errorf("%s %s: etag %s", format, c.query, etag)
				}
				cfg, got, err := image.DecodeConfig(bytes.NewReader(out))
				if err != nil || got != format || cfg.Width != c.w || cfg.Height != c.h {
					t.Errorf("%s %s: %s %dx%d %v, want %dx%d", format, c.query, got, cfg.Width, cfg.Height, err, c.w, c.h)
				}
			}
		}
		// Bigger than the source: the original is served.
		resp, out := s.do("GET", "/_matrix/media/v3/thumbnail/"+serverName+"/"+id+"?width=800&height=800", "", "", nil)
		if resp.StatusCode != 200 || !bytes.Equal(out, src) {
			t.Errorf("%s: large scale thumbnail is not the original", format)
		}
	}

	// Other content is served as is, with the safe headers.
	svg := []byte(`<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>`)
	id := s.upload(svg, "image/svg+xml", "")
	resp, out := s.do("GET", "/_matrix/media/v3/thumbnail/"+serverName+"/"+id+"?width=10&height=10", "", "", nil)
	if resp.StatusCode != 200 || !bytes.Equal(out, svg) || resp.Header.Get("Content-Type") != "application/octet-stream" ||
		resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("svg thumbnail: %d %v", resp.StatusCode, resp.Header)
	}

	for _, q := range []string{"", "width=100", "width=0&height=10", "width=-1&height=10", "width=a&height=10",
		"width=10&height=10&method=stretch", "width=99999999999&height=10"} {
		resp, out := s.do("GET", "/_matrix/client/v1/media/thumbnail/"+serverName+"/"+id+"?"+q, s.token, "", nil)
		s.wantError(resp, out, 400, "M_INVALID_PARAM")
	}
	resp, out = s.do("GET", "/_matrix/client/v1/media/thumbnail/"+serverName+"/"+id+"?width=10&height=10", "", "", nil)
	s.wantError(resp, out, 401, "M_MISSING_TOKEN")
}

// testMediaThumbnailBomb checks that a huge image is refused from its header.
func testMediaThumbnailBomb(t *testing.T, s *mediaTestServer) {
	// A 1x1 PNG whose header claims 10000x10000 pixels (400 MB decoded).
	var b bytes.Buffer
	if err := png.Encode(&b, image.NewGray(image.Rect(0, 0, 1, 1))); err != nil {
		t.Fatal(err)
	}
	bomb := b.Bytes()
	binary.BigEndian.PutUint32(bomb[16:], 10000) // IHDR width
	binary.BigEndian.PutUint32(bomb[20:], 10000) // IHDR height
	binary.BigEndian.PutUint32(bomb[29:], crc32.ChecksumIEEE(bomb[12:29]))
	id := s.upload(bomb, "image/png", "")
	resp, out := s.do("GET", "/_matrix/media/v3/thumbnail/"+serverName+"/"+id+"?width=10&height=10", "", "", nil)
	if resp.StatusCode != 400 || !bytes.Contains(out, []byte("errcode")) {
		t.Fatalf("bomb: %d %s", resp.StatusCode, out)
	}
}
