package media

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// TestKeepStoresAnotherNodesRecord: a copy kept from another store reads
// back with that store's record (content type, file name, uploader,
// creation time) and bytes, and makes thumbnails; keeping it again, or
// over an id held already, changes nothing.
func TestKeepStoresAnotherNodesRecord(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	origin, copyAt := newTestStore(t, Options{}), newTestStore(t, Options{})
	body := testImage(t, "png")
	id := mustPut(t, origin, Upload{Body: body, ContentType: "image/png", Filename: "cat.png", Uploader: "@a:test"})
	m, _, err := origin.Get(ctx, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := copyAt.Keep(ctx, id, *m, body); err != nil {
		t.Fatalf("keep: %v", err)
	}
	got, gotBody, err := copyAt.Get(ctx, id, 0)
	if err != nil || !bytes.Equal(gotBody, body) || *got != *m {
		t.Fatalf("the copy: %+v %v, want %+v", got, err, m)
	}
	if _, thumb, ct, err := copyAt.Thumbnail(ctx, id, 0, ThumbnailSpec{Width: 16, Height: 16, Method: Scale}); err != nil || ct != "image/png" || len(thumb) == 0 {
		t.Fatalf("thumbnail of the copy: %s, %d bytes, %v", ct, len(thumb), err)
	}

	other := *m
	other.Filename, other.Uploader = "dog.png", "@b:test"
	if err := copyAt.Keep(ctx, id, other, body); err != nil {
		t.Fatalf("keep again: %v", err)
	}
	if got, _, _ := copyAt.Get(ctx, id, 0); got.Filename != "cat.png" || got.Uploader != "@a:test" {
		t.Fatalf("keeping over a held id changed its record: %+v", got)
	}
}

// TestKeepRefusesWhatDoesNotMatch: content that is not the record's, a
// pending record, content over the upload limit and a bad file name are
// refused, and nothing is stored.
func TestKeepRefusesWhatDoesNotMatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	origin, copyAt := newTestStore(t, Options{}), newTestStore(t, Options{MaxUploadBytes: 8})
	body := []byte("0123456789")
	id := mustPut(t, origin, Upload{Body: body, ContentType: "text/plain", Uploader: "@a:test"})
	m, _, err := origin.Get(ctx, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	small := []byte("012345")
	smallID := mustPut(t, origin, Upload{Body: small, Uploader: "@a:test"})
	sm, _, err := origin.Get(ctx, smallID, 0)
	if err != nil {
		t.Fatal(err)
	}
	pending, badName := *sm, *sm
	pending.Pending = true
	badName.Filename = strings.Repeat("x", 256)
	for _, c := range []struct {
		name string
		m    Meta
		body []byte
		want error
	}{
		{"over the limit", *m, body, ErrTooLarge},
		{"other bytes", *sm, []byte("543210"), nil},
		{"pending", pending, small, nil},
		{"bad file name", badName, small, ErrBadFilename},
	} {
		err := copyAt.Keep(ctx, smallID, c.m, c.body)
		if err == nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want an error (%v)", c.name, err, c.want)
		}
	}
	if _, _, err := copyAt.Get(ctx, smallID, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after refused copies: %v, want not found", err)
	}
}
