package media

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Options tune a Store. MaxUploadBytes comes from the node's configuration
// (limits.max_upload_bytes) and must be set; a zero value of another
// field means its default (DefaultOptions). New reports every field it
// cannot run with.
type Options struct {
	// MaxUploadBytes is the largest body stored as media.
	MaxUploadBytes int64
	// PendingTTL is how long an id reserved by Reserve may wait for its
	// content; after that it is not found. Default 24 hours.
	PendingTTL time.Duration
	// MaxWait caps how long a read waits for a reserved id's content.
	// Longer lets slow uploaders finish, at the cost of a request held
	// open that long. Default 20 seconds.
	MaxWait time.Duration
	// PollInterval is how often a read waiting for a reserved id looks
	// for its content. Shorter answers sooner after the upload and reads
	// the store more often. Default 75 ms.
	PollInterval time.Duration
	// ThumbnailSlots is how many thumbnails the store generates at once.
	// Each holds a decoded source image (up to 4 bytes a pixel of
	// MaxThumbnailPixels), so this bounds the memory thumbnails take.
	// Default 2.
	ThumbnailSlots int
	// MaxThumbnailPixels is the largest source image, in pixels, decoded
	// for a thumbnail: a larger one (a decompression bomb, say) is refused
	// from its header. Default 50,000,000.
	MaxThumbnailPixels int64
	// Log receives the failures the store answers all the same (a
	// thumbnail it could not cache); nil discards them.
	Log *slog.Logger
}

// DefaultOptions returns the defaults of the options not configured.
func DefaultOptions() Options {
	return Options{
		PendingTTL:         24 * time.Hour,
		MaxWait:            20 * time.Second,
		PollInterval:       75 * time.Millisecond,
		ThumbnailSlots:     2,
		MaxThumbnailPixels: 50_000_000,
	}
}

// withDefaults returns o with every zero field set to its default; it is
// the one place the defaults are applied.
func (o Options) withDefaults() Options {
	d := DefaultOptions()
	o.PendingTTL = cmp.Or(o.PendingTTL, d.PendingTTL)
	o.MaxWait = cmp.Or(o.MaxWait, d.MaxWait)
	o.PollInterval = cmp.Or(o.PollInterval, d.PollInterval)
	o.ThumbnailSlots = cmp.Or(o.ThumbnailSlots, d.ThumbnailSlots)
	o.MaxThumbnailPixels = cmp.Or(o.MaxThumbnailPixels, d.MaxThumbnailPixels)
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// validate reports every field of o (defaults applied) that the store
// cannot run with, each by its name.
func (o Options) validate() error {
	var errs []error
	positive(&errs, "MaxUploadBytes", o.MaxUploadBytes)
	positive(&errs, "PendingTTL", o.PendingTTL)
	positive(&errs, "MaxWait", o.MaxWait)
	positive(&errs, "PollInterval", o.PollInterval)
	positive(&errs, "ThumbnailSlots", o.ThumbnailSlots)
	positive(&errs, "MaxThumbnailPixels", o.MaxThumbnailPixels)
	return errors.Join(errs...)
}

func positive[T int | int64 | time.Duration](errs *[]error, field string, v T) {
	if v <= 0 {
		*errs = append(*errs, fmt.Errorf("option %s is %v, want more than 0", field, v))
	}
}
