package outbox

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"persona/metrics"
)

// Client sends a transaction to the server it names (Transaction.Destination)
// and returns that server's answer; fclient.FederationClient satisfies it.
// SendTransaction must return once ctx ends.
type Client interface {
	SendTransaction(ctx context.Context, t gomatrixserverlib.Transaction) (fclient.RespSend, error)
}

var _ Client = fclient.FederationClient(nil)

// The spec's limits on one transaction.
const (
	specMaxPDUs = 50
	specMaxEDUs = 100
)

// Options tune the outbox. Origin and Client must be set; a zero value of
// another field means its default (DefaultOptions). New reports every field
// it cannot run with.
type Options struct {
	// Origin is this server's name: the origin of every transaction.
	Origin spec.ServerName
	// Client sends the transactions.
	Client Client
	// MaxPDUs is the most PDUs one transaction carries, 1 to 50 (the spec's
	// limit). Default 50.
	MaxPDUs int
	// MaxEDUs is the most EDUs one transaction carries, 1 to 100 (the spec's
	// limit). Default 100.
	MaxEDUs int
	// BackoffMin is the shortest wait before a failed transaction is sent
	// again; each failure in a row doubles the window the wait is drawn
	// from, up to BackoffMax. Shorter finds a returning server sooner,
	// longer spares one that is down. Default 1 s.
	BackoffMin time.Duration
	// BackoffMax is the longest wait between two attempts. Default 1 h.
	BackoffMax time.Duration
	// Horizon is how old the oldest queued entry may grow before the queue
	// is compacted to each room's latest PDU: the destination then fetches
	// the events in between with get_missing_events. Default 24 h.
	Horizon time.Duration
	// RequestTimeout bounds one attempt to send a transaction. Default 30 s.
	RequestTimeout time.Duration
	// Linger is how long a transaction with room for more waits, when every
	// entry it would carry is background (wire.OutboundPDUs.Background: a
	// profile's fan-out, a resend), after the last entry was queued: a
	// fan-out's PDUs then go in full transactions. An entry a client waits
	// on goes at once. Longer fills transactions on a busier machine and
	// delays a lone background PDU by as much. Default 250 ms.
	Linger time.Duration
	// MaxLinger bounds the Linger waits from the oldest entry queued, so
	// that a slow trickle of background PDUs still goes. Default 2 s.
	MaxLinger time.Duration
	// Metrics receives queue depths, transactions and back-offs; nil
	// disables them.
	Metrics *metrics.Metrics
	// Log receives what goes wrong; nil discards it.
	Log *slog.Logger
	// Now is the clock entries are queued by, and the horizon and lingers
	// measured with; nil means time.Now.
	Now func() time.Time
}

// DefaultOptions returns the defaults of the options not set.
func DefaultOptions() Options {
	return Options{
		MaxPDUs:        specMaxPDUs,
		MaxEDUs:        specMaxEDUs,
		BackoffMin:     time.Second,
		BackoffMax:     time.Hour,
		Horizon:        24 * time.Hour,
		RequestTimeout: 30 * time.Second,
		Linger:         250 * time.Millisecond,
		MaxLinger:      2 * time.Second,
		Log:            slog.New(slog.DiscardHandler),
		Now:            time.Now,
	}
}

// withDefaults returns o with every zero field set to its default; it is
// the one place the defaults are applied.
func (o Options) withDefaults() Options {
	d := DefaultOptions()
	o.MaxPDUs = cmp.Or(o.MaxPDUs, d.MaxPDUs)
	o.MaxEDUs = cmp.Or(o.MaxEDUs, d.MaxEDUs)
	o.BackoffMin = cmp.Or(o.BackoffMin, d.BackoffMin)
	o.BackoffMax = cmp.Or(o.BackoffMax, d.BackoffMax)
	o.Horizon = cmp.Or(o.Horizon, d.Horizon)
	o.RequestTimeout = cmp.Or(o.RequestTimeout, d.RequestTimeout)
	o.Linger = cmp.Or(o.Linger, d.Linger)
	o.MaxLinger = cmp.Or(o.MaxLinger, d.MaxLinger)
	if o.Log == nil {
		o.Log = d.Log
	}
	if o.Now == nil {
		o.Now = d.Now
	}
	return o
}

// validate reports every field of o (defaults applied) the outbox cannot
// run with, each by its name.
func (o Options) validate() error {
	var errs []error
	bad := func(field string, v any, want string) {
		errs = append(errs, fmt.Errorf("outbox: option %s is %v, want %s", field, v, want))
	}
	if _, _, ok := spec.ParseAndValidateServerName(o.Origin); !ok {
		bad("Origin", fmt.Sprintf("%q", o.Origin), "this server's name")
	}
	if o.Client == nil {
		bad("Client", "nil", "a federation client")
	}
	if o.MaxPDUs < 1 || o.MaxPDUs > specMaxPDUs {
		bad("MaxPDUs", o.MaxPDUs, fmt.Sprintf("1 to %d", specMaxPDUs))
	}
	if o.MaxEDUs < 1 || o.MaxEDUs > specMaxEDUs {
		bad("MaxEDUs", o.MaxEDUs, fmt.Sprintf("1 to %d", specMaxEDUs))
	}
	if o.BackoffMin < 0 {
		bad("BackoffMin", o.BackoffMin, "more than 0")
	}
	if o.BackoffMax < o.BackoffMin {
		bad("BackoffMax", o.BackoffMax, fmt.Sprintf("at least BackoffMin (%v)", o.BackoffMin))
	}
	if o.Horizon < 0 {
		bad("Horizon", o.Horizon, "more than 0")
	}
	if o.RequestTimeout < 0 {
		bad("RequestTimeout", o.RequestTimeout, "more than 0")
	}
	if o.Linger < 0 {
		bad("Linger", o.Linger, "more than 0")
	}
	if o.MaxLinger < o.Linger {
		bad("MaxLinger", o.MaxLinger, fmt.Sprintf("at least Linger (%v)", o.Linger))
	}
	return errors.Join(errs...)
}
