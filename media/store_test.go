package media

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"persona/storage"
)

// countKeys is the number of keys under prefix.
func countKeys(t *testing.T, s *Store, prefix []byte) (n int) {
	t.Helper()
	if err := s.st.Scan(prefix, nil, func(_, _ []byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// mustPut stores u and returns its id.
func mustPut(t *testing.T, s *Store, u Upload) string {
	t.Helper()
	id, err := s.Put(context.Background(), u)
	if err != nil {
		t.Fatalf("put: %v", err)
	}
	return id
}

// TestPutStoresContentOnce: two uploads of the same bytes get two ids
// and one blob; each id keeps its own record.
func TestPutStoresContentOnce(t *testing.T) {
	t.Parallel()
	s := newTestStore(t, Options{})
	body := []byte("<html><script>alert(1)</script></html>")
	a := mustPut(t, s, Upload{Body: body, ContentType: "text/html", Filename: "x.html", Uploader: "@a:test"})
	b := mustPut(t, s, Upload{Body: body, ContentType: "text/plain", Filename: "y.txt", Uploader: "@b:test"})
	if a == b {
		t.Fatal("same media id twice")
	}
	if n := countKeys(t, s, storage.Prefix("media", "blob")); n != 1 {
		t.Fatalf("%d blobs, want 1", n)
	}
	for _, c := range []struct{ id, ct, name, uploader string }{
		{a, "text/html", "x.html", "@a:test"}, {b, "text/plain", "y.txt", "@b:test"},
	} {
		m, got, err := s.Get(context.Background(), c.id, 0)
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("get %s: %q %v", c.id, got, err)
		}
		if m.ContentType != c.ct || m.Filename != c.name || m.Uploader != c.uploader || m.Size != int64(len(body)) ||
			m.Pending || m.CreatedMs <= 0 || len(m.SHA) != 64 {
			t.Errorf("record of %s: %+v", c.id, m)
		}
	}
}

// TestPutAnEmptyBody: empty content, nil or not, is stored and read back.
func TestPutAnEmptyBody(t *testing.T) {
	t.Parallel()
	s := newTestStore(t, Options{})
	for _, body := range [][]byte{nil, {}} {
		id := mustPut(t, s, Upload{Body: body})
		m, got, err := s.Get(context.Background(), id, 0)
		if err != nil || len(got) != 0 || m.Size != 0 || m.ContentType != "application/octet-stream" {
			t.Fatalf("empty body %v: %+v %q %v", body == nil, m, got, err)
		}
	}
}

// TestPutRefusesBadUploads: over the limit, a bad file name, or a request
// already ended, nothing is stored.
func TestPutRefusesBadUploads(t *testing.T) {
	t.Parallel()
	s := newTestStore(t, Options{MaxUploadBytes: 10})
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		u    Upload
		want error
	}{
		{"over the limit", context.Background(), Upload{Body: make([]byte, 11)}, ErrTooLarge},
		{"file name not UTF-8", context.Background(), Upload{Body: []byte("x"), Filename: "a\xffb"}, ErrBadFilename},
		{"file name too long", context.Background(), Upload{Body: []byte("x"), Filename: strings.Repeat("a", 256)}, ErrBadFilename},
		{"request ended", ended, Upload{Body: []byte("x")}, ErrBusy},
	} {
		if _, err := s.Put(tc.ctx, tc.u); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if n := countKeys(t, s, storage.Prefix("media")); n != 0 {
		t.Errorf("%d keys stored", n)
	}
	mustPut(t, s, Upload{Body: make([]byte, 10), Filename: strings.Repeat("é", 127)})
}

// TestContentTypesAreNormalised: the content type is kept parsed and
// formatted again, octet-stream when absent or malformed.
func TestContentTypesAreNormalised(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":                           "application/octet-stream",
		"image/PNG":                  "image/png",
		" text/plain; charset=UTF-8": "text/plain; charset=UTF-8",
		"garbage;;":                  "application/octet-stream",
		"text/html":                  "text/html",
		"image/png; " + strings.Repeat("a", 255) + "=b": "application/octet-stream",
	} {
		if got := normalType(in); got != want {
			t.Errorf("normalType(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestNewIDs: ids are 24 characters of [A-Za-z0-9], and do not repeat.
func TestNewIDs(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 1000 {
		id := newID()
		if len(id) != 24 || strings.Trim(id, idChars) != "" || seen[id] {
			t.Fatalf("bad or repeated id %q", id)
		}
		seen[id] = true
	}
}

// TestReservationIsFilledOnceByItsCreator: only the creator fills a
// reserved id, only once; an unknown id is not found.
func TestReservationIsFilledOnceByItsCreator(t *testing.T) {
	t.Parallel()
	s := newTestStore(t, Options{})
	ctx := context.Background()
	id, expires, err := s.Reserve("@a:test")
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(expires); d < 23*time.Hour || d > 24*time.Hour {
		t.Errorf("reservation expires in %v, want 24 h", d)
	}
	if _, _, err := s.Get(ctx, id, 0); !errors.Is(err, ErrNotYetUploaded) {
		t.Fatalf("get before the upload: %v", err)
	}
	if err := s.CheckReservation(id, "@a:test"); err != nil {
		t.Fatalf("creator: %v", err)
	}
	if err := s.Fill(ctx, id, Upload{Body: []byte("x"), Uploader: "@b:test"}); !errors.Is(err, ErrNotCreator) {
		t.Fatalf("fill by another user: %v", err)
	}
	if err := s.Fill(ctx, id, Upload{Body: []byte("content"), ContentType: "text/plain", Uploader: "@a:test"}); err != nil {
		t.Fatalf("fill: %v", err)
	}
	if err := s.Fill(ctx, id, Upload{Body: []byte("again"), Uploader: "@a:test"}); !errors.Is(err, ErrAlreadyUploaded) {
		t.Fatalf("second fill: %v", err)
	}
	m, body, err := s.Get(ctx, id, 0)
	if err != nil || string(body) != "content" || m.ContentType != "text/plain" || m.Pending {
		t.Fatalf("get: %+v %q %v", m, body, err)
	}
	if err := s.CheckReservation("AAAAAAAAAAAAAAAAAAAAAAAA", "@a:test"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
	if err := s.Fill(ctx, id, Upload{Body: make([]byte, 2<<20), Uploader: "@a:test"}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("fill over the limit: %v", err)
	}
}

// TestConcurrentFillsWriteOnce: of fills racing for one reservation,
// exactly one succeeds and its content is the one kept.
func TestConcurrentFillsWriteOnce(t *testing.T) {
	t.Parallel()
	s := newTestStore(t, Options{})
	id, _, err := s.Reserve("@a:test")
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = s.Fill(context.Background(), id, Upload{Body: []byte{byte(i)}, Uploader: "@a:test"})
		})
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		switch {
		case err == nil && won >= 0:
			t.Fatalf("fills %d and %d both succeeded", won, i)
		case err == nil:
			won = i
		case !errors.Is(err, ErrAlreadyUploaded):
			t.Fatalf("fill %d: %v", i, err)
		}
	}
	_, body, err := s.Get(context.Background(), id, 0)
	if won < 0 || err != nil || !bytes.Equal(body, []byte{byte(won)}) {
		t.Fatalf("winner %d, content %v, %v", won, body, err)
	}
}

// TestGetWaitsForAPendingUpload: a read of a reserved id gets the content
// that arrives while it waits.
func TestGetWaitsForAPendingUpload(t *testing.T) {
	t.Parallel()
	s := newTestStore(t, Options{PollInterval: 10 * time.Millisecond})
	id, _, err := s.Reserve("@a:test")
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	var getErr error
	var wg sync.WaitGroup
	wg.Go(func() { _, got, getErr = s.Get(context.Background(), id, 5*time.Second) })
	time.Sleep(50 * time.Millisecond)
	if err := s.Fill(context.Background(), id, Upload{Body: []byte("late"), Uploader: "@a:test"}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if getErr != nil || string(got) != "late" {
		t.Fatalf("waiting read: %q %v", got, getErr)
	}
}

// TestGetWaitsNoLongerThanMaxWait: a longer wait asked for is cut to
// MaxWait, and a read whose context ends stops waiting.
func TestGetWaitsNoLongerThanMaxWait(t *testing.T) {
	t.Parallel()
	s := newTestStore(t, Options{MaxWait: 100 * time.Millisecond, PollInterval: 10 * time.Millisecond})
	id, _, err := s.Reserve("@a:test")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, _, err := s.Get(context.Background(), id, time.Hour); !errors.Is(err, ErrNotYetUploaded) {
		t.Fatalf("get: %v", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 5*time.Second {
		t.Errorf("waited %v, want MaxWait (100ms)", d)
	}

	s = newTestStore(t, Options{PollInterval: 10 * time.Millisecond}) // MaxWait 20 s
	if id, _, err = s.Reserve("@a:test"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start = time.Now()
	if _, _, err := s.Get(ctx, id, time.Hour); !errors.Is(err, ErrNotYetUploaded) || time.Since(start) > 5*time.Second {
		t.Fatalf("get with an ending context: %v after %v", err, time.Since(start))
	}
}

// TestLapsedReservationIsNotFound: after PendingTTL a reserved id is not
// found, neither to read nor to fill.
func TestLapsedReservationIsNotFound(t *testing.T) {
	t.Parallel()
	s := newTestStore(t, Options{PendingTTL: 20 * time.Millisecond})
	id, _, err := s.Reserve("@a:test")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if _, _, err := s.Get(context.Background(), id, time.Second); !errors.Is(err, ErrNotFound) {
		t.Errorf("get: %v", err)
	}
	if err := s.Fill(context.Background(), id, Upload{Body: []byte("x"), Uploader: "@a:test"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("fill: %v", err)
	}
}

// TestStoreFailuresAreNotSentinels: a failure of the underlying store is
// none of the errors callers branch on.
func TestStoreFailuresAreNotSentinels(t *testing.T) {
	t.Parallel()
	st, err := storage.Open(t.TempDir(), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(st, Options{MaxUploadBytes: 10})
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	_, err = s.Put(context.Background(), Upload{Body: []byte("x")})
	for _, sentinel := range []error{ErrNotFound, ErrNotYetUploaded, ErrTooLarge, ErrNotCreator, ErrAlreadyUploaded,
		ErrBadFilename, ErrBadThumbnailSpec, ErrImageTooLarge, ErrBusy} {
		if err == nil || errors.Is(err, sentinel) {
			t.Fatalf("put into a closed store: %v", err)
		}
	}
}
