package outbox

import (
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"pgregory.net/rapid"

	"persona/storage"
)

// TestOptionsValidate checks that New names each option it cannot run
// with, and takes the defaults for zero ones.
func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	st, err := storage.Open(t.TempDir(), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	origin, pub, key := testOrigin(t)
	client := newPeer(t, origin, pub, "peer.test").client(origin, key)
	good := Options{Origin: origin, Client: client}
	for _, tc := range []struct {
		name string
		edit func(*Options)
		want []string // fields named in the error; none: no error
	}{
		{"defaults", func(*Options) {}, nil},
		{"no origin", func(o *Options) { o.Origin = "" }, []string{"Origin"}},
		{"bad origin", func(o *Options) { o.Origin = "a b" }, []string{"Origin"}},
		{"no client", func(o *Options) { o.Client = nil }, []string{"Client"}},
		{"too many PDUs", func(o *Options) { o.MaxPDUs = 51 }, []string{"MaxPDUs"}},
		{"too many EDUs", func(o *Options) { o.MaxEDUs = 101 }, []string{"MaxEDUs"}},
		{"negative", func(o *Options) { o.MaxPDUs, o.Horizon, o.RequestTimeout = -1, -time.Second, -time.Second },
			[]string{"MaxPDUs", "Horizon", "RequestTimeout"}},
		{"back-off upside down", func(o *Options) { o.BackoffMin, o.BackoffMax = time.Minute, time.Second }, []string{"BackoffMax"}},
		{"negative back-off", func(o *Options) { o.BackoffMin = -time.Second }, []string{"BackoffMin"}},
		{"linger upside down", func(o *Options) { o.Linger, o.MaxLinger = time.Second, time.Millisecond }, []string{"MaxLinger"}},
		{"negative linger", func(o *Options) { o.Linger = -time.Second }, []string{"Linger"}},
		{"everything at once", func(o *Options) { o.Origin, o.Client, o.MaxEDUs = "", nil, 500 }, []string{"Origin", "Client", "MaxEDUs"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.edit(&o)
			s, err := New(st, o)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if d := DefaultOptions(); s.opts.MaxPDUs != d.MaxPDUs || s.opts.MaxEDUs != d.MaxEDUs ||
					s.opts.BackoffMin != d.BackoffMin || s.opts.BackoffMax != d.BackoffMax ||
					s.opts.Horizon != d.Horizon || s.opts.RequestTimeout != d.RequestTimeout ||
					s.opts.Linger != d.Linger || s.opts.MaxLinger != d.MaxLinger || s.opts.Now == nil || s.opts.Log == nil {
					t.Errorf("zero options became %+v, want the defaults %+v", s.opts, d)
				}
				return
			}
			if err == nil {
				t.Fatalf("New accepted %+v", o)
			}
			for _, f := range tc.want {
				if !strings.Contains(err.Error(), "option "+f+" ") {
					t.Errorf("error %q does not name %s", err, f)
				}
			}
		})
	}
}

// TestBackoffDrawsFromADoublingWindow draws many waits after each number of
// failures in a row: each lies in [BackoffMin, window), the window doubles
// with each failure up to BackoffMax, and the waits spread over it (full
// jitter).
func TestBackoffDrawsFromADoublingWindow(t *testing.T) {
	t.Parallel()
	const lo, hi, draws = time.Second, time.Minute, 4000
	prevMean := time.Duration(0)
	for n := 1; n <= 8; n++ {
		window := min(hi, lo<<n)
		least, most, sum := hi, time.Duration(0), time.Duration(0)
		for range draws {
			d := backoff(n, lo, hi)
			least, most, sum = min(least, d), max(most, d), sum+d
		}
		if least < lo || most >= window {
			t.Errorf("failure %d: waits from %v to %v, want within [%v, %v)", n, least, most, lo, window)
		}
		// 4,000 uniform draws: the extremes come within 1% of the ends.
		if spread := window - lo; least > lo+spread/100 || most < window-spread/100 {
			t.Errorf("failure %d: waits from %v to %v do not cover [%v, %v)", n, least, most, lo, window)
		}
		mean := sum / draws
		if window < hi && mean <= prevMean {
			t.Errorf("failure %d: mean wait %v, not above the one before (%v)", n, mean, prevMean)
		}
		prevMean = mean
	}
	if got := backoff(1, time.Second, time.Second); got != time.Second {
		t.Errorf("BackoffMin = BackoffMax: waited %v, want %v", got, time.Second)
	}
}

// TestEntriesAndRecordsRoundTrip checks that queue entries and transaction
// records decode to what was encoded.
func TestEntriesAndRecordsRoundTrip(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		e := entry{
			kind: rapid.SampledFrom([]byte{pduEntry, eduEntry}).Draw(t, "kind"),
			at:   time.Unix(0, rapid.Int64().Draw(t, "at")),
			name: rapid.String().Draw(t, "name"),
			body: rapid.SliceOf(rapid.Byte()).Draw(t, "body"),
		}
		if e.kind == pduEntry {
			e.pos = rapid.Uint64().Draw(t, "pos")
		}
		got, err := decodeEntry(e.encode())
		if err != nil || got.kind != e.kind || !got.at.Equal(e.at) || got.name != e.name || got.pos != e.pos || string(got.body) != string(e.body) {
			t.Fatalf("entry %+v came back as %+v (%v)", e, got, err)
		}
		r := record{ts: spec.Timestamp(rapid.Uint64().Draw(t, "ts")), last: rapid.Uint64().Draw(t, "last"), delivered: rapid.Bool().Draw(t, "delivered")}
		r.id = txnID(r.ts, r.last)
		if back, err := decodeRecord(r.encode()); err != nil || back != r {
			t.Fatalf("record %+v came back as %+v (%v)", r, back, err)
		}
	})
}
