package profiles

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"

	"persona/metrics"
	"persona/storage"
)

// Client sends a signed federation request and decodes the answer into
// result; a non-2xx answer is a gomatrix.HTTPError. fclient.FederationClient
// satisfies it. It must return once ctx ends.
type Client interface {
	DoRequestAndParseResponse(ctx context.Context, req *http.Request, result any) error
}

var _ Client = fclient.FederationClient(nil)

// Options tune the cache. Store, Client and Identity must be set; a zero
// value of another field means its default (DefaultOptions). New reports
// every field it cannot run with.
type Options struct {
	// Store keeps the answered profiles, under fp/.
	Store *storage.Store
	// Client sends the queries.
	Client Client
	// Identity signs the queries: this server's name, key ID and key.
	Identity fclient.SigningIdentity
	// TTL is how long an answered profile is served before the user's
	// server is asked again (federation.profile_cache_ttl). Default 24 h.
	TTL time.Duration
	// ErrorTTL is how long a failed query is answered from memory before
	// the user's server is asked again (federation.profile_cache_error_ttl).
	// Default 1 min.
	ErrorTTL time.Duration
	// VerifyAfter is how long a value a member event put in the cache is
	// served before the next lookup checks it with a query: a per-room
	// name taken for a global one lasts no longer. It never brings the
	// next query closer than TTL does. Default 1 h.
	VerifyAfter time.Duration
	// RequestTimeout bounds one query. Default 10 s.
	RequestTimeout time.Duration
	// MaxFailures bounds the failed queries remembered; beyond it the
	// oldest are forgotten first. Default 10,000.
	MaxFailures int
	// Metrics counts queries, lookups and updates; nil disables them.
	Metrics *metrics.Metrics
	// Log receives what goes wrong; nil discards it.
	Log *slog.Logger
	// Now is the clock of expiries; nil means time.Now.
	Now func() time.Time
}

// DefaultOptions returns the defaults of the options not set.
func DefaultOptions() Options {
	return Options{
		TTL:            24 * time.Hour,
		ErrorTTL:       time.Minute,
		VerifyAfter:    time.Hour,
		RequestTimeout: 10 * time.Second,
		MaxFailures:    10000,
		Log:            slog.New(slog.DiscardHandler),
		Now:            time.Now,
	}
}

// withDefaults returns o with every zero field set to its default; it is
// the one place the defaults are applied.
func (o Options) withDefaults() Options {
	d := DefaultOptions()
	o.TTL = cmp.Or(o.TTL, d.TTL)
	o.ErrorTTL = cmp.Or(o.ErrorTTL, d.ErrorTTL)
	o.VerifyAfter = cmp.Or(o.VerifyAfter, d.VerifyAfter)
	o.RequestTimeout = cmp.Or(o.RequestTimeout, d.RequestTimeout)
	o.MaxFailures = cmp.Or(o.MaxFailures, d.MaxFailures)
	if o.Log == nil {
		o.Log = d.Log
	}
	if o.Now == nil {
		o.Now = d.Now
	}
	return o
}

// validate reports every field of o (defaults applied) the cache cannot
// run with, each by its name.
func (o Options) validate() error {
	var errs []error
	bad := func(field string, v any, want string) {
		errs = append(errs, fmt.Errorf("profiles: option %s is %v, want %s", field, v, want))
	}
	if o.Store == nil {
		bad("Store", "nil", "the node's store")
	}
	if o.Client == nil {
		bad("Client", "nil", "a federation client")
	}
	if o.Identity.ServerName == "" || o.Identity.KeyID == "" || len(o.Identity.PrivateKey) == 0 {
		bad("Identity", fmt.Sprintf("%q %q", o.Identity.ServerName, o.Identity.KeyID), "this server's name, key ID and signing key")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"TTL", o.TTL}, {"ErrorTTL", o.ErrorTTL}, {"VerifyAfter", o.VerifyAfter}, {"RequestTimeout", o.RequestTimeout}} {
		if d.v < 0 {
			bad(d.name, d.v, "more than 0")
		}
	}
	if o.MaxFailures < 0 {
		bad("MaxFailures", o.MaxFailures, "more than 0")
	}
	return errors.Join(errs...)
}
