package api

import (
	"net/http"
	"strconv"
	"time"

	"persona/media"
)

// thumbnail serves a thumbnail of a media item:
// GET /thumbnail/{serverName}/{mediaId}?width=&height=&method=.
// PNG and JPEG images are resized; other content, or an image already within
// the box, is served as it is (media.Store.Thumbnail). Media another member
// holds is fetched first, and thumbnailed here.
func (s *Server) thumbnail(r *http.Request) (any, error) {
	id, err := s.mediaPath(r)
	if err != nil {
		return nil, err
	}
	spec, err := thumbParams(r)
	if err != nil {
		return nil, err
	}
	timeout, err := s.mediaTimeout(r)
	if err != nil {
		return nil, err
	}
	var m *media.Meta
	var out []byte
	var ct string
	err = s.orFromPeers(r.Context(), id, timeout, func() (err error) {
		m, out, ct, err = s.media.Thumbnail(r.Context(), id, timeout, spec)
		return err
	})
	if err != nil {
		return nil, s.mediaErr(err)
	}
	return &mediaFile{out, ct, "", m.SHA + "-" + spec.String(), time.UnixMilli(m.CreatedMs)}, nil
}

// thumbParams parses width, height (positive integers) and method.
func thumbParams(r *http.Request) (media.ThumbnailSpec, error) {
	q := r.URL.Query()
	w, errW := strconv.ParseInt(q.Get("width"), 10, 32)
	h, errH := strconv.ParseInt(q.Get("height"), 10, 32)
	if errW != nil || errH != nil || w <= 0 || h <= 0 {
		return media.ThumbnailSpec{}, invalidParam("width and height must be positive integers.")
	}
	method := media.Method(q.Get("method"))
	switch method {
	case "":
		method = media.Scale
	case media.Scale, media.Crop:
	default:
		return media.ThumbnailSpec{}, invalidParam(`method must be "scale" or "crop".`)
	}
	return media.ThumbnailSpec{Width: int(w), Height: int(h), Method: method}, nil
}
