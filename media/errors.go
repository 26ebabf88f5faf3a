package media

import "errors"

// The errors callers branch on. Any other error a Store returns is a
// failure of the underlying store.
var (
	// ErrNotFound: no media under this id, or a reservation that lapsed.
	ErrNotFound = errors.New("media: not found")
	// ErrNotYetUploaded: the id is reserved and its content did not
	// arrive in time.
	ErrNotYetUploaded = errors.New("media: not yet uploaded")
	// ErrTooLarge: the body is larger than Options.MaxUploadBytes.
	ErrTooLarge = errors.New("media: larger than the upload limit")
	// ErrNotCreator: the reservation belongs to another user.
	ErrNotCreator = errors.New("media: reserved by another user")
	// ErrAlreadyUploaded: the reserved id already holds content.
	ErrAlreadyUploaded = errors.New("media: already uploaded")
	// ErrBadFilename: the file name is not UTF-8 or longer than 255 bytes.
	ErrBadFilename = errors.New("media: invalid file name")
	// ErrBadThumbnailSpec: a thumbnail box without a positive width and
	// height, or a method other than Scale and Crop.
	ErrBadThumbnailSpec = errors.New("media: invalid thumbnail spec")
	// ErrImageTooLarge: the image has more pixels than
	// Options.MaxThumbnailPixels, so no thumbnail is made of it.
	ErrImageTooLarge = errors.New("media: image too large to thumbnail")
	// ErrBusy: the request ended (its context) before the store could
	// take it on.
	ErrBusy = errors.New("media: busy")
)
