package api

import (
	"bytes"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"persona/media"
)

// download serves a media item's content, waiting for a pending upload up to
// timeout_ms, fetched from another member when this node does not hold it: GET /download/{serverName}/{mediaId}[/{fileName}].
func (s *Server) download(r *http.Request) (any, error) {
	id, err := s.mediaPath(r)
	if err != nil {
		return nil, err
	}
	timeout, err := s.mediaTimeout(r)
	if err != nil {
		return nil, err
	}
	var m *media.Meta
	var body []byte
	err = s.orFromPeers(r.Context(), id, timeout, func() (err error) {
		m, body, err = s.media.Get(r.Context(), id, timeout)
		return err
	})
	if err != nil {
		return nil, s.mediaErr(err)
	}
	name := r.PathValue("fileName")
	if name == "" {
		name = m.Filename
	}
	return &mediaFile{body, m.ContentType, name, m.SHA, time.UnixMilli(m.CreatedMs)}, nil
}

// mediaTimeout parses the timeout_ms query parameter: how long a read waits
// for a pending upload, by default and at most the media store's MaxWait.
func (s *Server) mediaTimeout(r *http.Request) (time.Duration, error) {
	maxWait := s.media.Options().MaxWait
	v := r.URL.Query().Get("timeout_ms")
	if v == "" {
		return maxWait, nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, invalidParam("timeout_ms must be an integer.")
	}
	ms = min(max(ms, 0), maxWait.Milliseconds())
	return time.Duration(ms) * time.Millisecond, nil
}

// mediaCSP forbids scripts, plugins and network access to anything a browser
// renders from a media URL.
const mediaCSP = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; " +
	"style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"

// mediaFile is media as answered: its body, the content type stored, the
// file name to offer, an etag and the time it was uploaded.
type mediaFile struct {
	body                        []byte
	contentType, filename, etag string
	modified                    time.Time
}

// write serves the body with headers that keep it inert: an allow-listed
// Content-Type, nosniff, a sandboxing CSP and a Content-Disposition naming
// the file. Content never changes under an id, so it may be cached for long;
// the etag identifies it. Range and conditional requests are honoured.
func (f *mediaFile) write(w http.ResponseWriter, r *http.Request) {
	ct, inline := safeContentType(f.contentType)
	h := w.Header()
	h.Set("Content-Type", ct)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", mediaCSP)
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("Content-Disposition", contentDisposition(inline, f.filename))
	h.Set("Cache-Control", "private, max-age=31536000, immutable")
	h.Set("ETag", `"`+f.etag+`"`)
	http.ServeContent(w, r, "", f.modified, bytes.NewReader(f.body))
}

// servedTypes are the content types served as uploaded; the value says
// whether a browser may show it inline. Anything else (HTML, SVG, XML,
// JavaScript...) is served as an application/octet-stream attachment.
var servedTypes = map[string]bool{
	"image/png": true, "image/jpeg": true, "image/gif": true, "image/webp": true,
	"image/apng": true, "image/avif": true,
	"video/mp4": true, "video/webm": true, "video/ogg": true, "video/quicktime": true,
	"audio/mp4": true, "audio/mpeg": true, "audio/ogg": true, "audio/webm": true, "audio/aac": true,
	"audio/wav": true, "audio/wave": true, "audio/x-wav": true, "audio/flac": true, "audio/x-flac": true,
	"audio/opus": true,
	"text/plain": true,
	"text/csv":   false, "application/json": false, "application/pdf": false,
	"application/zip": false, "application/octet-stream": false,
}

// safeContentType maps a stored content type to the one served and whether
// it may be shown inline. Only a text type keeps a parameter, its charset.
func safeContentType(stored string) (ct string, inline bool) {
	mt, params, err := mime.ParseMediaType(stored)
	if err != nil {
		return "application/octet-stream", false
	}
	inline, ok := servedTypes[mt]
	if !ok {
		if activeType(mt) {
			return "application/octet-stream", false
		}
		return mt, false // served as uploaded, but as an attachment, sandboxed and nosniff
	}
	if cs := params["charset"]; cs != "" && strings.HasPrefix(mt, "text/") {
		if f := mime.FormatMediaType(mt, map[string]string{"charset": cs}); f != "" {
			return f, inline
		}
	}
	return mt, inline
}

// contentDisposition is "inline" or "attachment" with the filename, encoded
// per RFC 6266: a UTF-8 filename* parameter when it is not plain ASCII.
func contentDisposition(inline bool, filename string) string {
	kind := "attachment"
	if inline {
		kind = "inline"
	}
	if filename == "" {
		return kind
	}
	if v := mime.FormatMediaType(kind, map[string]string{"filename": filename}); v != "" {
		return v
	}
	return kind
}

// activeType reports a type a browser may run or render as a document
// (HTML, SVG, XML, scripts): never served as such.
func activeType(mt string) bool {
	return strings.Contains(mt, "html") || strings.Contains(mt, "xml") || strings.Contains(mt, "svg") ||
		strings.Contains(mt, "script") || mt == "text/css" || mt == "application/pdf" || mt == "multipart/x-mixed-replace"
}
