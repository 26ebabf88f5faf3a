package api

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/jpeg"
	"image/png"
	"math"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/image/draw"

	"persona/storage"
)

// maxThumbPixels is the largest source image decoded for a thumbnail: a
// decompression bomb is refused from its header, before it is decoded.
const maxThumbPixels = 50_000_000

// thumbSlots bounds concurrent thumbnail generations, and so the memory of
// decoded images (up to 200 MB each).
var thumbSlots = make(chan struct{}, 2)

// thumbSpec is a thumbnail request: the box and how to fit the image in it.
type thumbSpec struct {
	width, height int
	method        string // "scale" or "crop"
}

// thumbnail serves a thumbnail of a media item:
// GET /thumbnail/{serverName}/{mediaId}?width=&height=&method=.
// PNG and JPEG images are resized; other content, or an image already within
// the box, is served as it is.
func (s *Server) thumbnail(r *http.Request) (any, error) {
	id, err := s.mediaPath(r)
	if err != nil {
		return nil, err
	}
	spec, err := thumbParams(r)
	if err != nil {
		return nil, err
	}
	timeout, err := mediaTimeout(r)
	if err != nil {
		return nil, err
	}
	m, err := s.awaitMedia(r.Context(), id, timeout)
	if err != nil {
		return nil, err
	}
	src, err := s.readBlob(m.SHA)
	if err != nil {
		return nil, err
	}
	out, ct, err := s.makeThumbnail(r.Context(), m, src, spec)
	if err != nil {
		return nil, err
	}
	etag := m.SHA + "-" + strconv.Itoa(spec.width) + "x" + strconv.Itoa(spec.height) + "-" + spec.method
	return &mediaFile{out, ct, "", etag, time.UnixMilli(m.CreatedMs)}, nil
}

// thumbParams parses width, height (positive integers) and method.
func thumbParams(r *http.Request) (thumbSpec, error) {
	q := r.URL.Query()
	w, errW := strconv.ParseInt(q.Get("width"), 10, 32)
	h, errH := strconv.ParseInt(q.Get("height"), 10, 32)
	if errW != nil || errH != nil || w <= 0 || h <= 0 {
		return thumbSpec{}, errorf(400, "M_INVALID_PARAM", "width and height must be positive integers.")
	}
	method := q.Get("method")
	switch method {
	case "":
		method = "scale"
	case "scale", "crop":
	default:
		return thumbSpec{}, errorf(400, "M_INVALID_PARAM", `method must be "scale" or "crop".`)
	}
	return thumbSpec{width: int(w), height: int(h), method: method}, nil
}

// makeThumbnail returns the thumbnail of src and its content type, from the
// cache when it was made before. Content that is not a PNG or JPEG image,
// that does not decode, or that needs no resizing is returned unchanged.
func (s *Server) makeThumbnail(ctx context.Context, m *mediaMeta, src []byte, spec thumbSpec) ([]byte, string, error) {
	cfg, format, err := image.DecodeConfig(bytes.NewReader(src))
	if err != nil || (format != "png" && format != "jpeg") {
		return src, m.ContentType, nil
	}
	if int64(cfg.Width)*int64(cfg.Height) > maxThumbPixels {
		return nil, "", errorf(400, "M_UNKNOWN", "The image is too large to thumbnail.")
	}
	ct := "image/" + format
	dw, dh, crop := thumbGeometry(cfg.Width, cfg.Height, spec)
	if dw == cfg.Width && dh == cfg.Height && crop == image.Rect(0, 0, cfg.Width, cfg.Height) {
		return src, m.ContentType, nil
	}
	key := mediaThumbKey(m.SHA, spec)
	if cached, err := s.store.Get(key); err == nil {
		return cached, ct, nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, "", s.mediaStoreFailed(err)
	}
	select {
	case thumbSlots <- struct{}{}:
		defer func() { <-thumbSlots }()
	case <-ctx.Done():
		return nil, "", errUnavailable
	}
	out, err := resizeImage(src, format, dw, dh, crop)
	if err != nil {
		return src, m.ContentType, nil // undecodable: like any other content
	}
	var b storage.Batch
	b.Set(key, out)
	if err := s.store.CommitSync(&b); err != nil {
		s.log.Warn("caching thumbnail failed", "err", err) // served all the same
	}
	return out, ct, nil
}

// thumbGeometry computes the output size and the source rectangle scaled into
// it, for a sw x sh image. "scale" fits the whole image inside the box,
// keeping its aspect ratio; "crop" fills the box and cuts the excess evenly
// from both sides. Neither ever upscales: a box bigger than the image is
// shrunk (crop) or ignored (scale).
func thumbGeometry(sw, sh int, spec thumbSpec) (dw, dh int, crop image.Rectangle) {
	full := image.Rect(0, 0, sw, sh)
	w, h := float64(spec.width), float64(spec.height)
	if spec.method != "crop" {
		if spec.width >= sw && spec.height >= sh {
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

// resizeImage decodes src (a PNG or JPEG, by format), scales its crop
// rectangle to dw x dh and encodes the result in the same format.
func resizeImage(src []byte, format string, dw, dh int, crop image.Rectangle) ([]byte, error) {
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
