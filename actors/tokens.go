package actors

import (
	"slices"
	"sync"

	"persona/wire"
)

// tokenCache holds the access tokens user actors of this node's own
// partitions accepted. A user actor forgets a token here when it logs the
// device out, which it can do only on the node it runs on: so a token of
// a partition another node owns is never cached, and a partition that
// moves loses its entries.
type tokenCache struct {
	mu      sync.Mutex
	byHash  map[string]cachedToken
	version uint64 // moves so far: a check begun before a move stores nothing
}

// cachedToken is an accepted token and the partition of its user.
type cachedToken struct {
	reply     *wire.AuthReply
	partition int
}

func (c *tokenCache) get(hash string) (*wire.AuthReply, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.byHash[hash]; ok {
		return t.reply, c.version
	}
	return nil, c.version
}

// put caches a token a check begun at version accepted, unless a
// partition moved since.
func (c *tokenCache) put(hash string, version uint64, t cachedToken) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.version != version {
		return
	}
	if c.byHash == nil {
		c.byHash = map[string]cachedToken{}
	}
	c.byHash[hash] = t
}

func (c *tokenCache) forget(hash string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.byHash, hash)
}

// moved drops the entries of the partitions moved.
func (c *tokenCache) moved(moved []int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.version++
	for h, t := range c.byHash {
		if slices.Contains(moved, t.partition) {
			delete(c.byHash, h)
		}
	}
}
