package api

// The media API: uploads (plain and asynchronous, via /create and PUT),
// downloads, thumbnails and the upload limit, over the node's media.Store.
// This side parses paths and queries and serves content with headers that
// keep it inert in browsers (media_serve.go); what is stored and how is the
// media package's. Only local media is served, from this node's store or,
// in a cluster, fetched from the member that holds it (media_peers.go);
// remote server names are not found until federation fetches media.

import (
	"context"
	"errors"
	"net/http"
	"regexp"

	"persona/internal/mxid"
	"persona/media"
)

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
	s.route(peerMediaPattern, s.peerMedia)
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
// uploaded with the profile).
func (s *Server) storeMedia(ctx context.Context, body []byte, contentType, filename string, uploader string) (mxc string, err error) {
	id, err := s.media.Put(ctx, media.Upload{Body: body, ContentType: contentType, Filename: filename, Uploader: uploader})
	if err != nil {
		return "", s.mediaErr(err)
	}
	return s.mxc(id), nil
}

// createMedia reserves a media id for a later PUT: POST /create.
func (s *Server) createMedia(_ *http.Request, sess *session) (any, error) {
	id, expires, err := s.media.Reserve(string(sess.user))
	if err != nil {
		return nil, s.mediaErr(err)
	}
	return map[string]any{"content_uri": s.mxc(id), "unused_expires_at": expires.UnixMilli()}, nil
}

// uploadTo fills a reserved media id, once, for its creator:
// PUT /upload/{serverName}/{mediaId}. In a cluster, an id this node did not
// reserve is passed on to the member that did (media_peers.go).
func (s *Server) uploadTo(r *http.Request, sess *session) (any, error) {
	id, err := s.mediaPath(r)
	if err == nil {
		err = s.media.CheckReservation(id, string(sess.user)) // answer early, before the body
	}
	if errors.Is(err, media.ErrNotFound) && s.cluster != nil && r.Header.Get(memberRequestHeader) == "" {
		body, err := s.readUpload(r)
		if err != nil {
			return nil, err
		}
		return s.uploadToMember(r, id, body)
	}
	if err != nil {
		return nil, s.mediaErr(err)
	}
	body, err := s.readUpload(r)
	if err != nil {
		return nil, err
	}
	u := media.Upload{Body: body, ContentType: r.Header.Get("Content-Type"), Filename: r.URL.Query().Get("filename"), Uploader: string(sess.user)}
	if err := s.media.Fill(r.Context(), id, u); err != nil {
		return nil, s.mediaErr(err)
	}
	return struct{}{}, nil
}

// mediaConfig answers GET /config.
func (s *Server) mediaConfig(*http.Request, *session) (any, error) {
	return map[string]int64{"m.upload.size": s.uploadLimit()}, nil
}

// uploadLimit is the largest media upload accepted, in bytes.
func (s *Server) uploadLimit() int64 { return s.media.Options().MaxUploadBytes }

// readUpload reads an upload body, refusing one over the upload limit before
// reading it when its Content-Length already says so.
func (s *Server) readUpload(r *http.Request) ([]byte, error) {
	if r.ContentLength > s.uploadLimit() {
		return nil, errTooLarge
	}
	return readBody(r, s.uploadLimit())
}

// mediaIDPattern is the grammar of a media id in a path.
var mediaIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,255}$`)

// mediaPath validates the {serverName} and {mediaId} path values and returns
// the media id. Media of other servers is not found until the federation
// step fetches remote media.
func (s *Server) mediaPath(r *http.Request) (string, error) {
	server, id := r.PathValue("serverName"), r.PathValue("mediaId")
	if !mxid.ValidServerName(server) || !mediaIDPattern.MatchString(id) {
		return "", invalidParam("Invalid server name or media ID.")
	}
	if server != s.cfg.ServerName {
		return "", media.ErrNotFound
	}
	return id, nil
}

// mxc is the content URI of a local media id.
func (s *Server) mxc(id string) string { return "mxc://" + s.cfg.ServerName + "/" + id }

// mediaErr returns err of the media store, logging it first when it is a
// failure of the store itself: its answer, an internal error, hides it
// from the client.
func (s *Server) mediaErr(err error) error {
	if err != nil && answer(err) == errInternal {
		s.log.Error("media store failed", "err", err)
	}
	return err
}
