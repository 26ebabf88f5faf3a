package federation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"persona/metrics"
	"persona/storage"
)

// keyDB is the key ring's KeyDatabase: the verified keys of other servers,
// one record per (server, key ID) under fk/key, and the signed key
// responses servers gave directly, one per server under fk/response, which
// the notary serves. It answers for this server's own key from its
// identity and stores nothing for it.
type keyDB struct {
	store    *storage.Store
	self     *fclient.SigningIdentity
	validity time.Duration
	metrics  *metrics.Metrics

	mu     sync.Mutex // guards cached
	cached map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult
}

// maxCachedKeys bounds the keys kept in memory; past it the cache starts
// again (every key is in the store).
const maxCachedKeys = 4096

func keyKey(server spec.ServerName, id gomatrixserverlib.KeyID) []byte {
	return storage.Key("fk", "key", string(server), string(id))
}

func responseKey(server spec.ServerName) []byte {
	return storage.Key("fk", "response", string(server))
}

// FetcherName names the store in the key ring's logs.
func (d *keyDB) FetcherName() string { return "persona key store" }

// FetchKeys returns the stored keys among those asked for, expired or not:
// the key ring decides which it may use.
func (d *keyDB) FetchKeys(_ context.Context, reqs map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	out := make(map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, len(reqs))
	var view *storage.Snapshot
	defer func() {
		if view != nil {
			view.Close()
		}
	}()
	for req := range reqs {
		if req.ServerName == d.self.ServerName {
			if req.KeyID == d.self.KeyID {
				out[req] = d.ownKey(time.Now())
			}
			continue
		}
		if res, ok := d.cachedKey(req); ok {
			out[req] = res
			continue
		}
		if view == nil {
			view = d.store.Snapshot()
		}
		v, err := view.Get(keyKey(req.ServerName, req.KeyID))
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			d.metrics.KeyFetch("store", "error")
			return nil, fmt.Errorf("read key %s %s: %w", req.ServerName, req.KeyID, err)
		}
		var res gomatrixserverlib.PublicKeyLookupResult
		if err := json.Unmarshal(v, &res); err != nil {
			return nil, fmt.Errorf("key %s %s: %w", req.ServerName, req.KeyID, err)
		}
		out[req] = res
		d.cache(req, res)
	}
	d.metrics.KeyFetch("store", found(len(out)))
	return out, nil
}

// ownKey is this server's key as a lookup result, valid for the key
// validity from now.
func (d *keyDB) ownKey(now time.Time) gomatrixserverlib.PublicKeyLookupResult {
	return gomatrixserverlib.PublicKeyLookupResult{
		VerifyKey:    gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes(d.self.PrivateKey.Public().(ed25519.PublicKey))},
		ExpiredTS:    gomatrixserverlib.PublicKeyNotExpired,
		ValidUntilTS: spec.AsTimestamp(now.Add(d.validity)),
	}
}

// StoreKeys writes the keys of other servers that differ from those
// stored, and returns once they are durable.
func (d *keyDB) StoreKeys(_ context.Context, results map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult) error {
	var b storage.Batch
	for req, res := range results {
		if req.ServerName == d.self.ServerName {
			continue
		}
		v, err := json.Marshal(res)
		if err != nil {
			return err
		}
		k := keyKey(req.ServerName, req.KeyID)
		if old, err := d.store.Get(k); err == nil && bytes.Equal(old, v) {
			continue
		}
		b.Set(k, v)
	}
	if b.Len() == 0 {
		return nil
	}
	if err := d.store.CommitSync(&b); err != nil {
		return err
	}
	for req, res := range results {
		if req.ServerName != d.self.ServerName {
			d.cache(req, res)
		}
	}
	return nil
}

// current returns server's stored keys that are valid at now.
func (d *keyDB) current(server spec.ServerName, now time.Time) (map[gomatrixserverlib.KeyID]ed25519.PublicKey, error) {
	keys := map[gomatrixserverlib.KeyID]ed25519.PublicKey{}
	prefix := storage.Prefix("fk", "key", string(server))
	err := d.store.Scan(prefix, nil, func(k, v []byte) error {
		var res gomatrixserverlib.PublicKeyLookupResult
		if err := json.Unmarshal(v, &res); err != nil {
			return fmt.Errorf("key %q: %w", k, err)
		}
		if res.ExpiredTS == gomatrixserverlib.PublicKeyNotExpired && res.ValidUntilTS > spec.AsTimestamp(now) && len(res.Key) == ed25519.PublicKeySize {
			keys[gomatrixserverlib.KeyID(k[len(prefix):])] = ed25519.PublicKey(res.Key)
		}
		return nil
	})
	return keys, err
}

// storeResponse keeps keys, a response its server signed and gave
// directly, for the notary.
func (d *keyDB) storeResponse(keys gomatrixserverlib.ServerKeys) error {
	var b storage.Batch
	b.Set(responseKey(keys.ServerName), bytes.Clone(keys.Raw))
	return d.store.CommitSync(&b)
}

// response returns the stored response of server, if any.
func (d *keyDB) response(server spec.ServerName) (gomatrixserverlib.ServerKeys, bool, error) {
	var keys gomatrixserverlib.ServerKeys
	v, err := d.store.Get(responseKey(server))
	if errors.Is(err, storage.ErrNotFound) {
		return keys, false, nil
	}
	if err != nil {
		return keys, false, err
	}
	if err := json.Unmarshal(v, &keys); err != nil {
		return keys, false, fmt.Errorf("key response of %s: %w", server, err)
	}
	return keys, true, nil
}

// found is the result label of a look that found n keys.
func found(n int) string {
	if n == 0 {
		return "none"
	}
	return "found"
}

// cachedKey is a key read or stored since start.
func (d *keyDB) cachedKey(req gomatrixserverlib.PublicKeyLookupRequest) (gomatrixserverlib.PublicKeyLookupResult, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	res, ok := d.cached[req]
	return res, ok
}

// cache keeps a key in memory: a signature check then reads no storage.
func (d *keyDB) cache(req gomatrixserverlib.PublicKeyLookupRequest, res gomatrixserverlib.PublicKeyLookupResult) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cached == nil || len(d.cached) >= maxCachedKeys {
		d.cached = map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	}
	d.cached[req] = res
}
