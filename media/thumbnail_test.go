package media

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"testing"
	"time"

	"persona/storage"
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

// TestThumbnailsAreResizedAndCached: PNG and JPEG images are resized in
// their own format, never upscaled, and each distinct resize is cached
// under the content's SHA-256; an image within the box is served as it is.
func TestThumbnailsAreResizedAndCached(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"png", "jpeg"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			s := newTestStore(t, Options{})
			src := testImage(t, format)
			id := mustPut(t, s, Upload{Body: src, ContentType: "image/" + format})
			for _, c := range []struct {
				spec ThumbnailSpec
				w, h int
			}{
				{ThumbnailSpec{100, 100, Scale}, 100, 50},
				{ThumbnailSpec{100, 100, Crop}, 100, 100},
				{ThumbnailSpec{1000, 1000, Crop}, 200, 200}, // never upscaled
			} {
				for range 2 { // made, then from the cache
					m, out, ct, err := s.Thumbnail(context.Background(), id, 0, c.spec)
					if err != nil || ct != "image/"+format || m.Size != int64(len(src)) {
						t.Fatalf("%s: %q %v", c.spec, ct, err)
					}
					cfg, got, err := image.DecodeConfig(bytes.NewReader(out))
					if err != nil || got != format || cfg.Width != c.w || cfg.Height != c.h {
						t.Errorf("%s: %s %dx%d %v, want %dx%d", c.spec, got, cfg.Width, cfg.Height, err, c.w, c.h)
					}
				}
			}
			m, out, _, err := s.Thumbnail(context.Background(), id, 0, ThumbnailSpec{800, 800, Scale})
			if err != nil || !bytes.Equal(out, src) {
				t.Errorf("a box bigger than the image: not the original (%v)", err)
			}
			if n := countKeys(t, s, storage.Prefix("media", "thumb", m.SHA)); n != 3 {
				t.Errorf("%d cached thumbnails, want 3", n)
			}
			cached, err := s.st.Get(storage.Key("media", "thumb", m.SHA, "100x100-crop"))
			if cfg, _, derr := image.DecodeConfig(bytes.NewReader(cached)); err != nil || derr != nil || cfg.Width != 100 || cfg.Height != 100 {
				t.Errorf("the cached 100x100 crop: %v %v %dx%d", err, derr, cfg.Width, cfg.Height)
			}
		})
	}
}

// TestThumbnailOfOtherContent: content that is not a PNG or JPEG image is
// returned as stored, with its stored content type.
func TestThumbnailOfOtherContent(t *testing.T) {
	t.Parallel()
	s := newTestStore(t, Options{})
	svg := []byte(`<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>`)
	id := mustPut(t, s, Upload{Body: svg, ContentType: "image/svg+xml"})
	_, out, ct, err := s.Thumbnail(context.Background(), id, 0, ThumbnailSpec{10, 10, Scale})
	if err != nil || !bytes.Equal(out, svg) || ct != "image/svg+xml" {
		t.Fatalf("svg: %q %v", ct, err)
	}
	if n := countKeys(t, s, storage.Prefix("media", "thumb")); n != 0 {
		t.Errorf("%d thumbnails cached", n)
	}
}

// TestThumbnailRefusesBadSpecsAndHugeImages: a box without a positive
// size or with an unknown method is refused, and an image over
// MaxThumbnailPixels is refused from its header, before it is decoded.
func TestThumbnailRefusesBadSpecsAndHugeImages(t *testing.T) {
	t.Parallel()
	s := newTestStore(t, Options{})
	small := newTestStore(t, Options{MaxThumbnailPixels: 400*200 - 1})
	id := mustPut(t, s, Upload{Body: testImage(t, "png")})
	for _, spec := range []ThumbnailSpec{{0, 10, Scale}, {10, -1, Crop}, {10, 10, "stretch"}, {10, 10, ""}} {
		if _, _, _, err := s.Thumbnail(context.Background(), id, 0, spec); !errors.Is(err, ErrBadThumbnailSpec) {
			t.Errorf("%+v: %v", spec, err)
		}
	}
	// A 1x1 PNG whose header claims 10000x10000 pixels (400 MB decoded).
	var b bytes.Buffer
	if err := png.Encode(&b, image.NewGray(image.Rect(0, 0, 1, 1))); err != nil {
		t.Fatal(err)
	}
	bomb := b.Bytes()
	binary.BigEndian.PutUint32(bomb[16:], 10000) // IHDR width
	binary.BigEndian.PutUint32(bomb[20:], 10000) // IHDR height
	binary.BigEndian.PutUint32(bomb[29:], crc32.ChecksumIEEE(bomb[12:29]))
	bombID := mustPut(t, s, Upload{Body: bomb, ContentType: "image/png"})
	if _, _, _, err := s.Thumbnail(context.Background(), bombID, 0, ThumbnailSpec{10, 10, Scale}); !errors.Is(err, ErrImageTooLarge) {
		t.Errorf("bomb: %v", err)
	}
	id = mustPut(t, small, Upload{Body: testImage(t, "png")})
	if _, _, _, err := small.Thumbnail(context.Background(), id, 0, ThumbnailSpec{10, 10, Scale}); !errors.Is(err, ErrImageTooLarge) {
		t.Errorf("an image one pixel over MaxThumbnailPixels: %v", err)
	}
}

// TestThumbnailSlotsArePerStore: a store generates at most ThumbnailSlots
// thumbnails at once, and another store, even on the same storage, has
// slots of its own.
func TestThumbnailSlotsArePerStore(t *testing.T) {
	t.Parallel()
	st := openStorage(t)
	a, err := New(st, Options{MaxUploadBytes: 1 << 20, ThumbnailSlots: 1})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(st, Options{MaxUploadBytes: 1 << 20, ThumbnailSlots: 1})
	if err != nil {
		t.Fatal(err)
	}
	id := mustPut(t, a, Upload{Body: testImage(t, "png")})
	a.slots <- struct{}{} // a generation under way in a
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, _, _, err := a.Thumbnail(ctx, id, 0, ThumbnailSpec{10, 10, Scale}); !errors.Is(err, ErrBusy) {
		t.Fatalf("a second generation in a store of one slot: %v", err)
	}
	if _, out, _, err := b.Thumbnail(context.Background(), id, 0, ThumbnailSpec{20, 20, Scale}); err != nil || len(out) == 0 {
		t.Fatalf("a generation in another store: %v", err)
	}
	<-a.slots
	if _, _, _, err := a.Thumbnail(context.Background(), id, 0, ThumbnailSpec{10, 10, Scale}); err != nil {
		t.Fatalf("a generation once the slot is free: %v", err)
	}
}

func TestThumbnailGeometry(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		sw, sh, w, h int
		method       Method
		dw, dh       int
		crop         image.Rectangle
	}{
		{400, 200, 100, 100, Scale, 100, 50, image.Rect(0, 0, 400, 200)},
		{400, 200, 400, 50, Scale, 100, 50, image.Rect(0, 0, 400, 200)},
		{400, 200, 500, 500, Scale, 400, 200, image.Rect(0, 0, 400, 200)},
		{400, 200, 100, 100, Crop, 100, 100, image.Rect(100, 0, 300, 200)},
		{400, 200, 200, 200, Crop, 200, 200, image.Rect(100, 0, 300, 200)},
		{400, 200, 100, 10, Crop, 100, 10, image.Rect(0, 80, 400, 120)},
		{400, 200, 1, 1000000, Crop, 1, 200, image.Rect(199, 0, 200, 200)},
	} {
		dw, dh, crop := geometry(c.sw, c.sh, ThumbnailSpec{c.w, c.h, c.method})
		if dw != c.dw || dh != c.dh || crop != c.crop {
			t.Errorf("%+v: got %dx%d %v", c, dw, dh, crop)
		}
	}
}
