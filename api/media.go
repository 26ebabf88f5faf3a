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
		s.route("POST "+p+"/upload", s.authed(s.upload))
		s.route("GET "+p+"/download/{serverName}/{mediaId}", s.download)
		s.route("GET "+p+"/download/{serverName}/{mediaId}/{fileName}", s.download)
		s.route("GET "+p+"/thumbnail/{serverName}/{mediaId}", s.thumbnail)
		s.route("GET "+p+"/config", s.authed(s.mediaConfig))
	}
	s.route("POST /_matrix/media/v1/create", s.authed(s.createMedia))
	s.route("PUT /_matrix/media/v3/upload/{serverName}/{mediaId}", s.authed(s.uploadTo))

	const v1 = "/_matrix/client/v1/media"
	s.route("GET "+v1+"/download/{serverName}/{mediaId}", s.authed(anySession(s.download)))
	s.route("GET "+v1+"/download/{serverName}/{mediaId}/{fileName}", s.authed(anySession(s.download)))
	s.route("GET "+v1+"/thumbnail/{serverName}/{mediaId}", s.authed(anySession(s.thumbnail)))
	s.route("GET "+v1+"/config", s.authed(s.mediaConfig))
}

// anySession adapts a handler that needs a valid token but not its session.
func anySession(h handler) authedHandler {
	return func(r *http.Request, _ *session) (any, error) { return h(r) }
}

// upload stores the raw request body as new media: POST /upload.
func (s *Server) upload(r *http.Request, sess *session) (any, error) {
	body, err := s.readUpload(r)
	if err != nil {
		return nil, err
	}
	mxc, err := s.storeMedia(r.Context(), body, r.Header.Get("Content-Type"), r.URL.Query().Get("filename"), string(sess.user))
	if err != nil {
		return nil, err
	}
	return map[string]string{"content_uri": mxc}, nil
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
func (s *Server) createMedia(r *http.Request, sess *session) (any, error) {
	now := time.Now()
	m := &mediaMeta{
		Uploader: string(sess.user), CreatedMs: now.UnixMilli(),
		Pending: true, ExpiresMs: now.Add(pendingTTL).UnixMilli(),
	}
	id := newMediaID()
	if err := s.writeMedia(id, m, nil); err != nil {
		return nil, err
	}
	return map[string]any{"content_uri": s.mxc(id), "unused_expires_at": m.ExpiresMs}, nil
}

// uploadTo fills a reserved media id, once, for its creator:
// PUT /upload/{serverName}/{mediaId}.
func (s *Server) uploadTo(r *http.Request, sess *session) (any, error) {
	id, err := s.mediaPath(r)
	if err == nil {
		err = s.checkReservation(id, string(sess.user)) // answer early, before the body
	}
	if err != nil {
		return nil, err
	}
	body, err := s.readUpload(r)
	if err != nil {
		return nil, err
	}
	m, err := newMediaMeta(r.Header.Get("Content-Type"), r.URL.Query().Get("filename"), string(sess.user))
	if err != nil {
		return nil, err
	}
	unlock := lockMedia(id)
	defer unlock()
	if err := s.checkReservation(id, string(sess.user)); err != nil { // again, under the lock
		return nil, err
	}
	if err := s.writeMedia(id, m, body); err != nil {
		return nil, err
	}
	return struct{}{}, nil
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
func (s *Server) mediaConfig(*http.Request, *session) (any, error) {
	return map[string]int64{"m.upload.size": s.cfg.Limits.MaxUploadBytes}, nil
}

// readUpload reads an upload body, refusing one over the upload limit before
// reading it when its Content-Length already says so.
func (s *Server) readUpload(r *http.Request) ([]byte, error) {
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
