package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"math"
	"strconv"
	"time"

	"golang.org/x/image/draw"

	"persona/storage"
)

// Method is how a thumbnail fits an image into its box.
type Method string

const (
	// Scale fits the whole image inside the box, keeping its aspect ratio.
	Scale Method = "scale"
	// Crop fills the box and cuts the excess evenly from both sides.
	Crop Method = "crop"
)

// ThumbnailSpec is a thumbnail wanted: the box and how the image fits in it.
type ThumbnailSpec struct {
	Width, Height int
	Method        Method
}

// String is the spec as "<W>x<H>-<method>", the name of its cached
// thumbnail.
func (t ThumbnailSpec) String() string {
	return strconv.Itoa(t.Width) + "x" + strconv.Itoa(t.Height) + "-" + string(t.Method)
}

func thumbKey(sha string, t ThumbnailSpec) []byte {
	return storage.Key("media", "thumb", sha, t.String())
}

// Thumbnail returns the record of media id (waiting for a pending upload
// as Get does) and a thumbnail of its content in the box spec, with the
// thumbnail's content type. PNG and JPEG images are resized, never
// upscaled, and the result cached; other content, an image that does not
// decode or one already within the box is returned as stored. It fails
// with ErrBadThumbnailSpec for a box without a positive width and height
// or with another method, ErrImageTooLarge for an image of more than
// Options.MaxThumbnailPixels, and ErrBusy when ctx ends while it waits for
// one of the Options.ThumbnailSlots.
func (s *Store) Thumbnail(ctx context.Context, id string, wait time.Duration, spec ThumbnailSpec) (
	m *Meta, body []byte, contentType string, err error) {
	if spec.Width <= 0 || spec.Height <= 0 || (spec.Method != Scale && spec.Method != Crop) {
		return nil, nil, "", ErrBadThumbnailSpec
	}
	m, src, err := s.Get(ctx, id, wait)
	if err != nil {
		return nil, nil, "", err
	}
	body, contentType, err = s.thumbnail(ctx, m, src, spec)
	if err != nil {
		return nil, nil, "", err
	}
	return m, body, contentType, nil
}

// thumbnail returns the thumbnail of src, the content of m, and its
// content type, from the cache when it was made before (see Thumbnail).
func (s *Store) thumbnail(ctx context.Context, m *Meta, src []byte, spec ThumbnailSpec) ([]byte, string, error) {
	cfg, format, err := image.DecodeConfig(bytes.NewReader(src))
	if err != nil || (format != "png" && format != "jpeg") {
		return src, m.ContentType, nil
	}
	if int64(cfg.Width)*int64(cfg.Height) > s.o.MaxThumbnailPixels {
		return nil, "", ErrImageTooLarge
	}
	ct := "image/" + format
	dw, dh, crop := geometry(cfg.Width, cfg.Height, spec)
	if dw == cfg.Width && dh == cfg.Height && crop == image.Rect(0, 0, cfg.Width, cfg.Height) {
		return src, m.ContentType, nil
	}
	key := thumbKey(m.SHA, spec)
	if cached, err := s.st.Get(key); err == nil {
		return cached, ct, nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, "", fmt.Errorf("media: read thumbnail %s %s: %w", m.SHA, spec, err)
	}
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	case <-ctx.Done():
		return nil, "", fmt.Errorf("%w: %w", ErrBusy, ctx.Err())
	}
	out, err := resize(src, format, dw, dh, crop)
	if err != nil {
		return src, m.ContentType, nil // undecodable: like any other content
	}
	var b storage.Batch
	b.Set(key, out)
	if err := s.st.CommitSync(&b); err != nil {
		s.o.Log.Warn("caching thumbnail failed", "err", err) // served all the same
	}
	return out, ct, nil
}

// geometry computes the output size and the source rectangle scaled into
// it, for a sw x sh image. Scale fits the whole image inside the box,
// keeping its aspect ratio; Crop fills the box and cuts the excess evenly
// from both sides. Neither ever upscales: a box bigger than the image is
// shrunk (Crop) or ignored (Scale).
func geometry(sw, sh int, spec ThumbnailSpec) (dw, dh int, crop image.Rectangle) {
	full := image.Rect(0, 0, sw, sh)
	w, h := float64(spec.Width), float64(spec.Height)
	if spec.Method != Crop {
		if spec.Width >= sw && spec.Height >= sh {
			return sw, sh, full
		}
		f := min(w/float64(sw), h/float64(sh))
		return max(1, int(math.Round(float64(sw)*f))), max(1, int(math.Round(float64(sh)*f))), full
	}
	f := max(w/float64(sw), h/float64(sh)) // output pixels per source pixel
	if f > 1 {
		w, h, f = w/f, h/f, 1
	}
	dw, dh = max(1, int(math.Round(w))), max(1, int(math.Round(h)))
	cw := min(sw, max(1, int(math.Round(float64(dw)/f))))
	ch := min(sh, max(1, int(math.Round(float64(dh)/f))))
	x0, y0 := (sw-cw)/2, (sh-ch)/2
	return dw, dh, image.Rect(x0, y0, x0+cw, y0+ch)
}

// resize decodes src (a PNG or JPEG, by format), scales its crop
// rectangle to dw x dh and encodes the result in the same format.
func resize(src []byte, format string, dw, dh int, crop image.Rectangle) ([]byte, error) {
	var img image.Image
	var err error
	if format == "png" {
		img, err = png.Decode(bytes.NewReader(src))
	} else {
		img, err = jpeg.Decode(bytes.NewReader(src))
	}
	if err != nil {
		return nil, err
	}
	crop = crop.Add(img.Bounds().Min)
	// Catmull-Rom looks best; bilinear keeps huge sources fast enough.
	var scaler draw.Scaler = draw.CatmullRom
	if crop.Dx()*crop.Dy() > 16_000_000 {
		scaler = draw.ApproxBiLinear
	}
	dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
	scaler.Scale(dst, dst.Bounds(), img, crop, draw.Src, nil)
	var out bytes.Buffer
	if format == "png" {
		err = png.Encode(&out, dst)
	} else {
		err = jpeg.Encode(&out, dst, &jpeg.Options{Quality: 85})
	}
	return out.Bytes(), err
}
