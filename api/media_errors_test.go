package api

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"persona/media"
)

// TestMediaErrorsMapToSpecErrcodes covers every error the media store
// names, wrapped or not: each gets the status, errcode and message the
// media API has always answered that case with; any other error of the
// store (a storage failure) is an internal error, and a request its
// client gave up is counted apart (499).
func TestMediaErrorsMapToSpecErrcodes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		err        error
		wantStatus int
		wantCode   string
		wantMsg    string
	}{
		{"unknown media", media.ErrNotFound, 404, "M_NOT_FOUND", "Media not found."},
		{"pending upload", media.ErrNotYetUploaded, 504, "M_NOT_YET_UPLOADED", "The media has not been uploaded yet."},
		{"over the upload limit", media.ErrTooLarge, 413, "M_TOO_LARGE", "Request body too large."},
		{"another user's reservation", media.ErrNotCreator, 403, "M_FORBIDDEN", "This media ID was created by another user."},
		{"filled reservation", media.ErrAlreadyUploaded, 409, "M_CANNOT_OVERWRITE_MEDIA", "Media has already been uploaded to this ID."},
		{"bad file name", media.ErrBadFilename, 400, "M_INVALID_PARAM", "Invalid filename."},
		{"bad thumbnail box", media.ErrBadThumbnailSpec, 400, "M_INVALID_PARAM", "Invalid thumbnail size or method."},
		{"image too large", media.ErrImageTooLarge, 400, "M_UNKNOWN", "The image is too large to thumbnail."},
		{"busy", fmt.Errorf("%w: %w", media.ErrBusy, context.Canceled), 503, "M_UNKNOWN", "The server is busy; try again."},
		{"storage failure", errors.New("media: read x: storage: closed"), 500, "M_UNKNOWN", "Internal server error."},
		{"client gone", fmt.Errorf("ask the user actor: %w", context.Canceled), 499, "M_UNKNOWN", "The client closed the request."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, err := range []error{tc.err, fmt.Errorf("upload: %w", tc.err)} {
				e := answer(err)
				if e.Status != tc.wantStatus || e.Code != tc.wantCode || e.Message != tc.wantMsg {
					t.Fatalf("%v answered %d %s %q, want %d %s %q", err, e.Status, e.Code, e.Message,
						tc.wantStatus, tc.wantCode, tc.wantMsg)
				}
			}
		})
	}
}
