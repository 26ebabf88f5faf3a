package federation

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"persona/metrics"
)

// newKeyRing builds the key ring: keys come from db first, then from their
// server (/_matrix/key/v2/server), then from each notary in turn; the ring
// stores what it fetched in db.
func newKeyRing(client gomatrixserverlib.KeyClient, db *keyDB, notaries []spec.ServerName, m *metrics.Metrics) *gomatrixserverlib.KeyRing {
	kc := &keepingClient{KeyClient: client, db: db}
	pub := db.self.PrivateKey.Public().(ed25519.PublicKey)
	direct := &gomatrixserverlib.DirectKeyFetcher{
		Client:            kc,
		IsLocalServerName: func(s spec.ServerName) bool { return s == db.self.ServerName },
		LocalPublicKey:    spec.Base64Bytes(pub),
	}
	ring := &gomatrixserverlib.KeyRing{
		KeyDatabase: db,
		KeyFetchers: []gomatrixserverlib.KeyFetcher{&countingFetcher{KeyFetcher: direct, source: "direct", metrics: m}},
	}
	for _, n := range notaries {
		ring.KeyFetchers = append(ring.KeyFetchers, &countingFetcher{
			KeyFetcher: &notaryFetcher{name: n, client: kc, db: db},
			source:     "notary", metrics: m,
		})
	}
	return ring
}

// keepingClient is the key ring's client: it stores every key response a
// server gives about itself that passes gomatrixserverlib.CheckKeys, so
// that the notary can serve it.
type keepingClient struct {
	gomatrixserverlib.KeyClient
	db *keyDB
}

// GetServerKeys asks server for its keys and keeps the response when it
// checks out.
func (c *keepingClient) GetServerKeys(ctx context.Context, server spec.ServerName) (gomatrixserverlib.ServerKeys, error) {
	keys, err := c.KeyClient.GetServerKeys(ctx, server)
	if err != nil {
		return keys, err
	}
	if checks, _ := gomatrixserverlib.CheckKeys(server, time.Now(), keys); checks.AllChecksOK {
		if err := c.db.storeResponse(keys); err != nil {
			return keys, fmt.Errorf("store key response of %s: %w", server, err)
		}
	}
	return keys, nil
}

// notaryFetcher asks one notary for keys. It trusts the notary's own keys
// as the notary gives them directly (and keeps them with the other keys).
type notaryFetcher struct {
	name   spec.ServerName
	client gomatrixserverlib.KeyClient
	db     *keyDB
}

// FetcherName names the notary in the key ring's logs.
func (n *notaryFetcher) FetcherName() string { return "notary " + string(n.name) }

// FetchKeys asks the notary's /_matrix/key/v2/query for reqs and returns
// the keys of responses that both the notary and their server signed.
func (n *notaryFetcher) FetchKeys(ctx context.Context, reqs map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	keys, err := n.notaryKeys(ctx)
	if err != nil {
		return nil, err
	}
	p := &gomatrixserverlib.PerspectiveKeyFetcher{PerspectiveServerName: n.name, PerspectiveServerKeys: keys, Client: n.client}
	return p.FetchKeys(ctx, reqs)
}

// notaryKeys returns the notary's current keys: the stored ones, else
// those it gives directly, which are then stored.
func (n *notaryFetcher) notaryKeys(ctx context.Context) (map[gomatrixserverlib.KeyID]ed25519.PublicKey, error) {
	now := time.Now()
	keys, err := n.db.current(n.name, now)
	if err != nil || len(keys) > 0 {
		return keys, err
	}
	sk, err := n.client.GetServerKeys(ctx, n.name)
	if err != nil {
		return nil, fmt.Errorf("keys of notary %s: %w", n.name, err)
	}
	checks, valid := gomatrixserverlib.CheckKeys(n.name, now, sk)
	if !checks.AllChecksOK {
		return nil, fmt.Errorf("keys of notary %s fail the checks: %+v", n.name, checks)
	}
	results := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	for id, key := range valid {
		keys[id] = ed25519.PublicKey(key)
		results[gomatrixserverlib.PublicKeyLookupRequest{ServerName: n.name, KeyID: id}] = gomatrixserverlib.PublicKeyLookupResult{
			VerifyKey: gomatrixserverlib.VerifyKey{Key: key}, ExpiredTS: gomatrixserverlib.PublicKeyNotExpired, ValidUntilTS: sk.ValidUntilTS,
		}
	}
	return keys, n.db.StoreKeys(ctx, results)
}

// countingFetcher counts a fetcher's looks in the key fetch metric.
type countingFetcher struct {
	gomatrixserverlib.KeyFetcher
	source  string
	metrics *metrics.Metrics
}

// FetchKeys asks the fetcher and counts the result.
func (c *countingFetcher) FetchKeys(ctx context.Context, reqs map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	out, err := c.KeyFetcher.FetchKeys(ctx, reqs)
	if err != nil {
		c.metrics.KeyFetch(c.source, "error")
	} else {
		c.metrics.KeyFetch(c.source, found(len(out)))
	}
	return out, err
}
