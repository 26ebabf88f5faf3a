// Package media is the media repository's store: uploads kept in the
// node's badger once per distinct content (by SHA-256), ids reserved for a
// later upload and filled once by their creator, reads that wait for a
// reserved id's content, and thumbnails made and cached on demand. It owns
// the "media" prefix of the node's store and no other key, and knows
// nothing of HTTP: it answers with records, bytes and the errors of
// errors.go, which api turns into Matrix errors.
package media

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"mime"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"persona/storage"
)

// Storage layout, all under the "media" prefix of the node's store:
//
//	media/blob/<sha256 hex>              the content, once per distinct body
//	media/id/<mediaId>                   a Meta record (JSON)
//	media/thumb/<sha256 hex>/<W>x<H>-<m> a generated thumbnail

func idKey(id string) []byte    { return storage.Key("media", "id", id) }
func blobKey(sha string) []byte { return storage.Key("media", "blob", sha) }

// Meta is the record kept per media id.
type Meta struct {
	// SHA is the hex SHA-256 of the content, the key of its blob.
	SHA string `json:"sha,omitempty"`
	// ContentType is the uploader's content type, normalised
	// (application/octet-stream when absent or malformed).
	ContentType string `json:"content_type,omitempty"`
	// Filename is the uploader's file name, if any.
	Filename string `json:"filename,omitempty"`
	// Size is the length of the content in bytes.
	Size int64 `json:"size"`
	// Uploader is the user who uploaded or reserved the id.
	Uploader string `json:"uploader"`
	// CreatedMs is when the content was uploaded or the id reserved, in
	// Unix milliseconds.
	CreatedMs int64 `json:"created_ms"`
	// Pending marks an id reserved by Reserve whose content has not arrived.
	Pending bool `json:"pending,omitempty"`
	// ExpiresMs is when a pending reservation lapses, in Unix milliseconds.
	ExpiresMs int64 `json:"expires_ms,omitempty"`
}

// expired reports whether m is a pending reservation past its deadline.
func (m *Meta) expired(now time.Time) bool {
	return m.Pending && m.ExpiresMs > 0 && now.UnixMilli() > m.ExpiresMs
}

// Upload is content to store and what its uploader said of it.
type Upload struct {
	Body        []byte
	ContentType string
	Filename    string
	Uploader    string
}

// Store is the media of one node. Its methods may be called concurrently.
type Store struct {
	st *storage.Store
	o  Options
	// locks serialise the check-then-write of one media id (filling a
	// reservation), striped by id.
	locks [64]sync.Mutex
	seed  maphash.Seed
	// slots bound concurrent thumbnail generations (Options.ThumbnailSlots).
	slots chan struct{}
}

// New returns the media store kept in st, or an error naming every option
// it cannot run with.
func New(st *storage.Store, o Options) (*Store, error) {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("media: %w", err)
	}
	return &Store{st: st, o: o, seed: maphash.MakeSeed(), slots: make(chan struct{}, o.ThumbnailSlots)}, nil
}

// Options returns the options the store runs with, defaults filled in.
func (s *Store) Options() Options { return s.o }

// Put stores u as a new media item and returns its new id. Content already
// stored (the same SHA-256) is not written again.
func (s *Store) Put(ctx context.Context, u Upload) (id string, err error) {
	m, err := s.newMeta(u)
	if err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("%w: %w", ErrBusy, err)
	}
	id = newID()
	if err := s.writeContent(id, m, u.Body); err != nil {
		return "", err
	}
	return id, nil
}

// Reserve reserves a new media id for uploader to fill with Fill, until
// expires (Options.PendingTTL from now).
func (s *Store) Reserve(uploader string) (id string, expires time.Time, err error) {
	now := time.Now()
	expires = now.Add(s.o.PendingTTL)
	m := &Meta{Uploader: uploader, CreatedMs: now.UnixMilli(), Pending: true, ExpiresMs: expires.UnixMilli()}
	id = newID()
	if err := s.writeMeta(id, m, nil); err != nil {
		return "", time.Time{}, err
	}
	return id, expires, nil
}

// CheckReservation returns nil when uploader may fill id now: ErrNotFound
// when id is not reserved or lapsed, ErrNotCreator when another user
// reserved it, ErrAlreadyUploaded when it holds content.
func (s *Store) CheckReservation(id, uploader string) error {
	m, err := s.meta(id)
	switch {
	case err != nil:
		return err
	case m.Uploader != uploader:
		return ErrNotCreator
	case !m.Pending:
		return ErrAlreadyUploaded
	case m.expired(time.Now()):
		return ErrNotFound
	}
	return nil
}

// Fill stores u as the content of the reserved id, once: it checks the
// reservation (CheckReservation) and writes under the id's lock, so of two
// concurrent fills one fails with ErrAlreadyUploaded.
func (s *Store) Fill(ctx context.Context, id string, u Upload) error {
	m, err := s.newMeta(u)
	if err != nil {
		return err
	}
	unlock := s.lock(id)
	defer unlock()
	if err := s.CheckReservation(id, u.Uploader); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrBusy, err)
	}
	return s.writeContent(id, m, u.Body)
}

// Keep stores a copy of media id that another node holds: its record as
// that node has it (content type, file name, uploader, creation time) and
// its content. The content must be the record's (its SHA-256 and size) and
// within the upload limit (else ErrTooLarge), its file name valid (else
// ErrBadFilename); a pending record is refused.
// An id this node holds already is left as it is.
func (s *Store) Keep(ctx context.Context, id string, m Meta, body []byte) error {
	if int64(len(body)) > s.o.MaxUploadBytes {
		return ErrTooLarge
	}
	if !utf8.ValidString(m.Filename) || len(m.Filename) > 255 {
		return ErrBadFilename
	}
	sum := sha256.Sum256(body)
	if m.Pending || m.SHA != hex.EncodeToString(sum[:]) || m.Size != int64(len(body)) {
		return fmt.Errorf("media: copy of %s: content does not match its record (sha %s, %d bytes)", id, m.SHA, m.Size)
	}
	unlock := s.lock(id)
	defer unlock()
	if _, err := s.meta(id); !errors.Is(err, ErrNotFound) {
		return err // held already (nil), or a failure to read
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrBusy, err)
	}
	m.ContentType, m.ExpiresMs = normalType(m.ContentType), 0
	return s.writeContent(id, &m, body)
}

// Get returns the record and content of media id. While id is a pending
// reservation it waits for the content up to wait (at most
// Options.MaxWait) or until ctx ends, then fails with ErrNotYetUploaded.
func (s *Store) Get(ctx context.Context, id string, wait time.Duration) (*Meta, []byte, error) {
	m, err := s.await(ctx, id, wait)
	if err != nil {
		return nil, nil, err
	}
	body, err := s.st.Get(blobKey(m.SHA))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil, ErrNotFound
	}
	if err != nil {
		return nil, nil, fmt.Errorf("media: read content %s of %s: %w", m.SHA, id, err)
	}
	return m, body, nil
}

// await returns the record of an uploaded media id, polling the store
// while id is a pending reservation (see Get).
func (s *Store) await(ctx context.Context, id string, wait time.Duration) (*Meta, error) {
	deadline := time.Now().Add(min(max(wait, 0), s.o.MaxWait))
	for {
		m, err := s.meta(id)
		if err != nil {
			return nil, err
		}
		now := time.Now()
		switch {
		case !m.Pending:
			return m, nil
		case m.expired(now):
			return nil, ErrNotFound
		case !now.Before(deadline):
			return nil, ErrNotYetUploaded
		}
		t := time.NewTimer(min(s.o.PollInterval, deadline.Sub(now)))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ErrNotYetUploaded
		case <-t.C:
		}
	}
}

// meta reads the record of a media id: ErrNotFound when there is none.
func (s *Store) meta(id string) (*Meta, error) {
	raw, err := s.st.Get(idKey(id))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("media: read %s: %w", id, err)
	}
	var m Meta
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("media: decode %s: %w", id, err)
	}
	return &m, nil
}

// writeContent durably stores body and the record m under id, filling
// m.SHA and m.Size; content already stored is not written again.
func (s *Store) writeContent(id string, m *Meta, body []byte) error {
	if body == nil {
		body = []byte{}
	}
	sum := sha256.Sum256(body)
	m.SHA, m.Size = hex.EncodeToString(sum[:]), int64(len(body))
	have, err := s.has(blobKey(m.SHA))
	if err != nil {
		return fmt.Errorf("media: look up content %s: %w", m.SHA, err)
	}
	if have {
		body = nil
	}
	return s.writeMeta(id, m, body)
}

// writeMeta durably stores the record m under id and, when body is not
// nil, body as the blob of m.SHA, in one batch.
func (s *Store) writeMeta(id string, m *Meta, body []byte) error {
	raw, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("media: encode %s: %w", id, err)
	}
	var b storage.Batch
	if body != nil {
		b.Set(blobKey(m.SHA), body)
	}
	b.Set(idKey(id), raw)
	if err := s.st.CommitSync(&b); err != nil {
		return fmt.Errorf("media: write %s: %w", id, err)
	}
	return nil
}

// has reports whether key holds a value, without copying the value.
func (s *Store) has(key []byte) (bool, error) {
	found := false
	err := s.st.Scan(key, nil, func(k, _ []byte) error {
		found = bytes.Equal(k, key)
		return storage.ErrStopScan
	})
	return found, err
}

// lock takes the lock stripe of id and returns its unlock.
func (s *Store) lock(id string) (unlock func()) {
	m := &s.locks[maphash.String(s.seed, id)%uint64(len(s.locks))]
	m.Lock()
	return m.Unlock
}

// newMeta builds the record of an upload: ErrTooLarge over the upload
// limit, ErrBadFilename unless the file name is valid UTF-8 of at most 255
// bytes. The content type is kept normalised (application/octet-stream
// when absent or malformed); what is served is for the reader to decide.
func (s *Store) newMeta(u Upload) (*Meta, error) {
	if int64(len(u.Body)) > s.o.MaxUploadBytes {
		return nil, ErrTooLarge
	}
	if !utf8.ValidString(u.Filename) || len(u.Filename) > 255 {
		return nil, ErrBadFilename
	}
	return &Meta{ContentType: normalType(u.ContentType), Filename: u.Filename, Uploader: u.Uploader,
		CreatedMs: time.Now().UnixMilli()}, nil
}

// normalType is contentType parsed and formatted again, or
// application/octet-stream when it is absent, malformed or over 255 bytes.
func normalType(contentType string) string {
	if len(contentType) <= 255 {
		if mt, params, err := mime.ParseMediaType(strings.TrimSpace(contentType)); err == nil {
			if f := mime.FormatMediaType(mt, params); f != "" {
				return f
			}
		}
	}
	return "application/octet-stream"
}

// idChars is the alphabet of generated media ids.
const idChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// newID returns 24 uniformly random characters of idChars.
func newID() string {
	out := make([]byte, 0, 24)
	var buf [32]byte
	for len(out) < cap(out) {
		_, _ = rand.Read(buf[:])
		for _, b := range buf {
			// 248 = 4*62: rejecting larger bytes keeps the choice uniform.
			if b < 248 && len(out) < cap(out) {
				out = append(out, idChars[b%62])
			}
		}
	}
	return string(out)
}
