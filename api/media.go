package api

// The media repository: uploads (plain and asynchronous, via /create and PUT),
// downloads, thumbnails and the upload limit. Content is kept in the node's
// store, deduplicated by SHA-256 (see media_store.go), and served with
// headers that keep it inert in browsers (media_serve.go). Only local media
// is served; remote server names are not found until federation exists.

import (
	"context"
	"mime"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

// pendingTTL is how long an id reserved by /create may wait for its content.
const pendingTTL = 24 * time.Hour

// mediaRoutes registers the media API: the legacy /_matrix/media/{v3,r0}
// endpoints, /create, and the authenticated /_matrix/client/v1/media ones.
func (s *Server) mediaRoutes() {
	for _, p := range []string{"/_matrix/media/v3", "/_matrix/media/r0"} {
		s.mux.HandleFunc("POST "+p+"/upload", s.authedFunc(s.upload))
		s.mux.HandleFunc("GET "+p+"/download/{serverName}/{mediaId}", s.download)
		s.mux.HandleFunc("GET "+p+"/download/{serverName}/{mediaId}/{fileName}", s.download)
		s.mux.HandleFunc("GET "+p+"/thumbnail/{serverName}/{mediaId}", s.thumbnail)
		s.mux.HandleFunc("GET "+p+"/config", s.authedFunc(s.mediaConfig))
	}
	s.mux.HandleFunc("POST /_matrix/media/v1/create", s.authedFunc(s.createMedia))
	s.mux.HandleFunc("PUT /_matrix/media/v3/upload/{serverName}/{mediaId}", s.authedFunc(s.uploadTo))

	const v1 = "/_matrix/client/v1/media"
	s.mux.HandleFunc("GET "+v1+"/download/{serverName}/{mediaId}", s.authedFunc(anySession(s.download)))
	s.mux.HandleFunc("GET "+v1+"/download/{serverName}/{mediaId}/{fileName}", s.authedFunc(anySession(s.download)))
	s.mux.HandleFunc("GET "+v1+"/thumbnail/{serverName}/{mediaId}", s.authedFunc(anySession(s.thumbnail)))
	s.mux.HandleFunc("GET "+v1+"/config", s.authedFunc(s.mediaConfig))
}

// anySession adapts a handler that needs a valid token but not its session.
func anySession(h http.HandlerFunc) func(http.ResponseWriter, *http.Request, *session) {
	return func(w http.ResponseWriter, r *http.Request, _ *session) { h(w, r) }
}

// upload stores the raw request body as new media: POST /upload.
func (s *Server) upload(w http.ResponseWriter, r *http.Request, sess *session) {
	body, err := s.readUpload(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	mxc, err := s.storeMedia(r.Context(), body, r.Header.Get("Content-Type"), r.URL.Query().Get("filename"), string(sess.user))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, map[string]string{"content_uri": mxc})
}

// storeMedia stores body as a new local media item of uploader and returns
// its mxc:// URI. It is also the entry point for other handlers (an avatar
// uploaded with the profile). Bad input (too large, bad filename) is an *Error.
func (s *Server) storeMedia(ctx context.Context, body []byte, contentType, filename string, uploader string) (mxc string, err error) {
	if int64(len(body)) > s.cfg.Limits.MaxUploadBytes {
		return "", errTooLarge
	}
	m, err := newMediaMeta(contentType, filename, uploader)
	if err != nil {
		return "", err
	}
	if ctx.Err() != nil {
		return "", errUnavailable
	}
	id := newMediaID()
	if err := s.writeMedia(id, m, body); err != nil {
		return "", err
	}
	return s.mxc(id), nil
}

// createMedia reserves a media id for a later PUT: POST /create.
func (s *Server) createMedia(w http.ResponseWriter, r *http.Request, sess *session) {
	now := time.Now()
	m := &mediaMeta{
		Uploader: string(sess.user), CreatedMs: now.UnixMilli(),
		Pending: true, ExpiresMs: now.Add(pendingTTL).UnixMilli(),
	}
	id := newMediaID()
	if err := s.writeMedia(id, m, nil); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, map[string]any{"content_uri": s.mxc(id), "unused_expires_at": m.ExpiresMs})
}

// uploadTo fills a reserved media id, once, for its creator:
// PUT /upload/{serverName}/{mediaId}.
func (s *Server) uploadTo(w http.ResponseWriter, r *http.Request, sess *session) {
	id, err := s.mediaPath(r)
	if err == nil {
		err = s.checkReservation(id, string(sess.user)) // answer early, before the body
	}
	if err != nil {
		writeError(w, err)
		return
	}
	body, err := s.readUpload(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	m, err := newMediaMeta(r.Header.Get("Content-Type"), r.URL.Query().Get("filename"), string(sess.user))
	if err != nil {
		writeError(w, err)
		return
	}
	unlock := lockMedia(id)
	defer unlock()
	if err := s.checkReservation(id, string(sess.user)); err != nil { // again, under the lock
		writeError(w, err)
		return
	}
	if err := s.writeMedia(id, m, body); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, struct{}{})
}

// checkReservation checks that user may PUT content to id now.
func (s *Server) checkReservation(id, user string) error {
	m, err := s.loadMeta(id)
	switch {
	case err != nil:
		return err
	case m.Uploader != user:
		return errorf(403, "M_FORBIDDEN", "This media ID was created by another user.")
	case !m.Pending:
		return errorf(409, "M_CANNOT_OVERWRITE_MEDIA", "Media has already been uploaded to this ID.")
	case m.expired(time.Now()):
		return errMediaNotFound
	}
	return nil
}

// mediaConfig answers GET /config.
func (s *Server) mediaConfig(w http.ResponseWriter, _ *http.Request, _ *session) {
	writeJSON(w, 200, map[string]int64{"m.upload.size": s.cfg.Limits.MaxUploadBytes})
}

// readUpload reads an upload body, refusing one over the upload limit before
// reading it when its Content-Length already says so.
func (s *Server) readUpload(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > s.cfg.Limits.MaxUploadBytes {
		return nil, errTooLarge
	}
	return readBody(r, s.cfg.Limits.MaxUploadBytes)
}

// newMediaMeta builds the record of a new upload. The content type is kept
// normalised (application/octet-stream when absent or malformed); what is
// served is decided on download. The filename must be valid UTF-8 of at most
// 255 bytes.
func newMediaMeta(contentType, filename, uploader string) (*mediaMeta, error) {
	if !utf8.ValidString(filename) || len(filename) > 255 {
		return nil, errorf(400, "M_INVALID_PARAM", "Invalid filename.")
	}
	ct := "application/octet-stream"
	if mt, params, err := mime.ParseMediaType(strings.TrimSpace(contentType)); err == nil && len(contentType) <= 255 {
		if f := mime.FormatMediaType(mt, params); f != "" {
			ct = f
		}
	}
	return &mediaMeta{ContentType: ct, Filename: filename, Uploader: uploader, CreatedMs: time.Now().UnixMilli()}, nil
}

// mxc is the content URI of a local media id.
func (s *Server) mxc(id string) string { return "mxc://" + s.cfg.ServerName + "/" + id }
