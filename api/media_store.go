package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"hash/maphash"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"time"

	"persona/internal/mxid"
	"persona/storage"
)

// Media storage layout, all under the "media" prefix of the node's store:
//
//	media/blob/<sha256 hex>              the content, once per distinct body
//	media/id/<mediaId>                   a mediaMeta record (JSON)
//	media/thumb/<sha256 hex>/<W>x<H>-<m> a generated thumbnail

// mediaMeta is the record kept per media id.
type mediaMeta struct {
	SHA         string `json:"sha,omitempty"`
	ContentType string `json:"content_type,omitempty"`
	Filename    string `json:"filename,omitempty"`
	Size        int64  `json:"size"`
	Uploader    string `json:"uploader"`
	CreatedMs   int64  `json:"created_ms"`
	// Pending marks an id reserved by /create whose content has not arrived.
	Pending bool `json:"pending,omitempty"`
	// ExpiresMs is when a pending reservation lapses.
	ExpiresMs int64 `json:"expires_ms,omitempty"`
}

// expired reports whether m is a pending reservation past its deadline.
func (m *mediaMeta) expired(now time.Time) bool {
	return m.Pending && m.ExpiresMs > 0 && now.UnixMilli() > m.ExpiresMs
}

func mediaIDKey(id string) []byte    { return storage.Key("media", "id", id) }
func mediaBlobKey(sha string) []byte { return storage.Key("media", "blob", sha) }

func mediaThumbKey(sha string, t thumbSpec) []byte {
	return storage.Key("media", "thumb", sha, strconv.Itoa(t.width)+"x"+strconv.Itoa(t.height)+"-"+t.method)
}

var (
	errMediaNotFound = errorf(404, "M_NOT_FOUND", "Media not found.")
	errNotYetUpload  = errorf(504, "M_NOT_YET_UPLOADED", "The media has not been uploaded yet.")
	mediaIDPattern   = regexp.MustCompile(`^[A-Za-z0-9_-]{1,255}$`)
)

// mediaPath validates the {serverName} and {mediaId} path values and returns
// the media id. Media of other servers answers 404 M_NOT_FOUND until the
// federation step fetches remote media.
func (s *Server) mediaPath(r *http.Request) (string, error) {
	server, id := r.PathValue("serverName"), r.PathValue("mediaId")
	if !mxid.ValidServerName(server) || !mediaIDPattern.MatchString(id) {
		return "", errorf(400, "M_INVALID_PARAM", "Invalid server name or media ID.")
	}
	if server != s.cfg.ServerName {
		return "", errMediaNotFound
	}
	return id, nil
}

// mediaIDChars is the alphabet of generated media ids.
const mediaIDChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// newMediaID returns 24 uniformly random characters of mediaIDChars.
func newMediaID() string {
	out := make([]byte, 0, 24)
	var buf [32]byte
	for len(out) < cap(out) {
		_, _ = rand.Read(buf[:])
		for _, b := range buf {
			// 248 = 4*62: rejecting larger bytes keeps the choice uniform.
			if b < 248 && len(out) < cap(out) {
				out = append(out, mediaIDChars[b%62])
			}
		}
	}
	return string(out)
}

// mediaLocks serialise the check-then-write of one media id (a PUT to a
// /create reservation), striped by id.
var (
	mediaLocks    [64]sync.Mutex
	mediaLockSeed = maphash.MakeSeed()
)

func lockMedia(id string) (unlock func()) {
	m := &mediaLocks[maphash.String(mediaLockSeed, id)%uint64(len(mediaLocks))]
	m.Lock()
	return m.Unlock
}

// writeMedia durably stores the record m under id and, when body is not nil,
// the content (filling m.SHA and m.Size); content already stored under the
// same SHA-256 is not written again.
func (s *Server) writeMedia(id string, m *mediaMeta, body []byte) error {
	var b storage.Batch
	if body != nil {
		sum := sha256.Sum256(body)
		m.SHA, m.Size = hex.EncodeToString(sum[:]), int64(len(body))
		have, err := s.hasKey(mediaBlobKey(m.SHA))
		if err != nil {
			return s.mediaStoreFailed(err)
		}
		if !have {
			b.Set(mediaBlobKey(m.SHA), body)
		}
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return s.mediaStoreFailed(err)
	}
	b.Set(mediaIDKey(id), raw)
	if err := s.store.CommitSync(&b); err != nil {
		return s.mediaStoreFailed(err)
	}
	return nil
}

// hasKey reports whether key holds a value, without copying the value.
func (s *Server) hasKey(key []byte) (bool, error) {
	found := false
	err := s.store.Scan(key, nil, func(k, _ []byte) error {
		found = bytes.Equal(k, key)
		return storage.ErrStopScan
	})
	return found, err
}

// loadMeta reads the record of a media id: M_NOT_FOUND when there is none.
func (s *Server) loadMeta(id string) (*mediaMeta, error) {
	raw, err := s.store.Get(mediaIDKey(id))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, errMediaNotFound
	}
	if err != nil {
		return nil, s.mediaStoreFailed(err)
	}
	var m mediaMeta
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, s.mediaStoreFailed(err)
	}
	return &m, nil
}

// readBlob returns the content stored under sha.
func (s *Server) readBlob(sha string) ([]byte, error) {
	body, err := s.store.Get(mediaBlobKey(sha))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, errMediaNotFound
	}
	if err != nil {
		return nil, s.mediaStoreFailed(err)
	}
	return body, nil
}

// awaitMedia returns the record of an uploaded media id. While the id is a
// pending /create reservation it polls the store until the content arrives,
// timeout passes (M_NOT_YET_UPLOADED) or ctx ends.
func (s *Server) awaitMedia(ctx context.Context, id string, timeout time.Duration) (*mediaMeta, error) {
	const poll = 75 * time.Millisecond
	deadline := time.Now().Add(timeout)
	for {
		m, err := s.loadMeta(id)
		if err != nil {
			return nil, err
		}
		now := time.Now()
		switch {
		case !m.Pending:
			return m, nil
		case m.expired(now):
			return nil, errMediaNotFound
		case !now.Before(deadline):
			return nil, errNotYetUpload
		}
		t := time.NewTimer(min(poll, deadline.Sub(now)))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, errNotYetUpload
		case <-t.C:
		}
	}
}

// maxMediaWait caps how long a download waits for a pending upload.
const maxMediaWait = 20 * time.Second

// mediaTimeout parses the timeout_ms query parameter: default and cap 20 s.
func mediaTimeout(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("timeout_ms")
	if v == "" {
		return maxMediaWait, nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, errorf(400, "M_INVALID_PARAM", "timeout_ms must be an integer.")
	}
	ms = min(max(ms, 0), maxMediaWait.Milliseconds())
	return time.Duration(ms) * time.Millisecond, nil
}

// mediaStoreFailed logs a storage failure and hides it behind M_UNKNOWN.
func (s *Server) mediaStoreFailed(err error) error {
	s.log.Error("media storage failed", "err", err)
	return errInternal
}
