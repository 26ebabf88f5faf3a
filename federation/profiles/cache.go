// Package profiles caches the profiles of other servers' users for the
// client API. A lookup asks the user's server once
// (GET /_matrix/federation/v1/query/profile, every field) and keeps the
// answer in the store for a TTL; lookups of one user while a query is on
// its way wait for that query instead of sending their own, and a failed
// query is answered from memory for a while, so no burst of clients, member
// events or retries turns into a burst of queries. Between queries, the
// member events and profile EDUs the user's server sends refresh the cached
// display name and avatar (refresh.go states when).
//
// profiles owns the fp/ keys of the store and nothing else. It makes its
// queries on goroutines of its own, which Close ends; it knows no actor.
package profiles

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"persona/storage"
)

// Errors a lookup is refused with, as the user's server answered it; they
// are remembered for Options.ErrorTTL like any failure.
var (
	// ErrNotFound is the server's 404: the user does not exist or has no
	// profile.
	ErrNotFound = errors.New("profiles: the user's server has no profile for the user")
	// ErrForbidden is the server's 403: it does not share the profile.
	ErrForbidden = errors.New("profiles: the user's server does not share the profile")
	// ErrNoAnswer wraps the failure of a query the server gave no usable
	// answer to: it did not answer (the cause is wrapped too, so a timeout
	// is context.DeadlineExceeded), or answered another status, or no
	// profile.
	ErrNoAnswer = errors.New("profiles: no usable answer from the user's server")
	// ErrClosed is the answer to a lookup after Close.
	ErrClosed = errors.New("profiles: the cache is closed")
)

// Cache is the node's cache of remote profiles.
type Cache struct {
	opts   Options
	ctx    context.Context // the parent of every query; Close cancels it
	cancel context.CancelFunc
	wg     sync.WaitGroup // the queries' goroutines

	mu       sync.Mutex // guards closed, calls and failures
	closed   bool
	calls    map[string]*call   // the query on its way, by user
	failures map[string]failure // failed queries remembered, by user

	writing sync.Mutex // orders the read-modify-write of an entry
}

// call is one query that every lookup of its user waits for.
type call struct {
	done   chan struct{} // closed once the fields below are set
	fields json.RawMessage
	stale  bool // fields are an expired entry's: the query failed
	err    error
}

// failure is a failed query and until when it answers lookups.
type failure struct {
	err   error
	until time.Time
}

// New returns the cache of a node. It fails on options it cannot run with,
// naming each.
func New(o Options) (*Cache, error) {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Cache{opts: o, ctx: ctx, cancel: cancel, calls: map[string]*call{}, failures: map[string]failure{}}, nil
}

// Close ends the queries on their way and waits for their goroutines;
// their lookups, and lookups after it, fail with ErrClosed. Call it
// before the store closes.
func (c *Cache) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
}

// Lookup returns every field of user's profile as a JSON object, user
// being of another server: from the cache while the entry is fresh, else
// from one query to the user's server that concurrent lookups share. A
// server that does not answer leaves an expired entry in use. It fails
// with ErrNotFound or ErrForbidden when the server answers so, with an
// error wrapping ErrNoAnswer when it gives no usable answer (and
// context.DeadlineExceeded when it timed out), with ctx's error when ctx
// ends first, and with ErrClosed after Close; any other error is the
// store's.
func (c *Cache) Lookup(ctx context.Context, user string) (json.RawMessage, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if a, ok, err := c.cached(user); err != nil || ok {
		if err == nil {
			c.opts.Metrics.RemoteProfileLookup(a.source)
		}
		return a.fields, firstErr(err, a.err)
	}
	cl, leader, err := c.join(user)
	if err != nil {
		return nil, err
	}
	select {
	case <-cl.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	switch {
	case !leader:
		c.opts.Metrics.RemoteProfileLookup("shared")
	case cl.stale:
		c.opts.Metrics.RemoteProfileLookup("stale")
	default:
		c.opts.Metrics.RemoteProfileLookup("query")
	}
	return cl.fields, cl.err
}

// firstErr is a unless it is nil, else b.
func firstErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// answer is a lookup answered without a query.
type answer struct {
	fields json.RawMessage
	err    error
	source string // cache, negative or stale
}

// cached answers a lookup of user from what the cache holds: a fresh
// entry, or a failure remembered (with the expired entry, if any, when the
// server did not answer). ok is false when a query is due.
func (c *Cache) cached(user string) (a answer, ok bool, err error) {
	now := c.opts.Now()
	e, err := c.read(user)
	if err != nil {
		return answer{}, false, err
	}
	if e != nil && e.fresh(now, c.opts.TTL) {
		return answer{fields: e.json(), source: "cache"}, true, nil
	}
	c.mu.Lock()
	f, failed := c.failures[user]
	c.mu.Unlock()
	if !failed || !now.Before(f.until) {
		return answer{}, false, nil
	}
	if e != nil && !refused(f.err) {
		return answer{fields: e.json(), source: "stale"}, true, nil
	}
	return answer{err: f.err, source: "negative"}, true, nil
}

// refused reports whether err is the server's own refusal (404, 403), as
// opposed to its not answering.
func refused(err error) bool { return errors.Is(err, ErrNotFound) || errors.Is(err, ErrForbidden) }

// join returns the query of user on its way, or starts one: leader is true
// for the lookup that started it.
func (c *Cache) join(user string) (cl *call, leader bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, false, ErrClosed
	}
	if cl := c.calls[user]; cl != nil {
		return cl, false, nil
	}
	cl = &call{done: make(chan struct{})}
	c.calls[user] = cl
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		cl.fields, cl.stale, cl.err = c.refresh(user)
		c.mu.Lock()
		delete(c.calls, user)
		c.mu.Unlock()
		close(cl.done)
	}()
	return cl, true, nil
}

// refresh answers a lookup of user for every lookup waiting on it. It
// looks at the cache again first: a query that ended after its lookup
// looked has written its outcome before it stopped being the one on its
// way, so this query is not sent. Its outcome is written before it
// returns, for the same reason.
func (c *Cache) refresh(user string) (fields json.RawMessage, stale bool, err error) {
	if a, ok, err := c.cached(user); err != nil || ok {
		return a.fields, a.source == "stale", firstErr(err, a.err)
	}
	e, err := c.read(user)
	if err != nil {
		return nil, false, err
	}
	now := c.opts.Now()
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.RequestTimeout)
	defer cancel()
	got, qerr := c.query(ctx, user)
	if c.ctx.Err() != nil {
		return nil, false, ErrClosed // Close ended it: nothing to learn of the server
	}
	c.opts.Metrics.RemoteProfileQuery(resultOf(qerr))
	if qerr == nil {
		fresh := &entry{Fields: got, Queried: now.UnixMilli()}
		if err := c.put(user, fresh); err != nil {
			return nil, false, err
		}
		c.forget(user)
		return fresh.json(), false, nil
	}
	c.opts.Log.Info("profile query failed", "user", user, "err", qerr)
	c.remember(user, qerr, now)
	if refused(qerr) {
		return nil, false, firstErr(c.remove(user), qerr)
	}
	if e != nil {
		return e.json(), true, nil
	}
	return nil, false, qerr
}

// remember keeps a failed query for ErrorTTL, forgetting the expired ones
// (and then the oldest) when MaxFailures are kept.
func (c *Cache) remember(user string, err error, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.failures[user]; !ok && len(c.failures) >= c.opts.MaxFailures {
		oldest := ""
		for u, f := range c.failures {
			if !now.Before(f.until) {
				delete(c.failures, u)
			} else if oldest == "" || f.until.Before(c.failures[oldest].until) {
				oldest = u
			}
		}
		if len(c.failures) >= c.opts.MaxFailures {
			delete(c.failures, oldest)
		}
	}
	c.failures[user] = failure{err: err, until: now.Add(c.opts.ErrorTTL)}
}

// forget drops user's failure remembered, if any.
func (c *Cache) forget(user string) {
	c.mu.Lock()
	delete(c.failures, user)
	c.mu.Unlock()
}

// entry is a cached profile, the value of fp/<user>.
type entry struct {
	// Fields are the profile's fields, as the user's server answered them
	// and later member events and EDUs changed them.
	Fields map[string]json.RawMessage `json:"f"`
	// Queried is when the server answered (unix ms): the TTL runs from it.
	Queried int64 `json:"q"`
	// Check is when a value a member event put in Fields is to be checked
	// by a query (unix ms); 0 when none is.
	Check int64 `json:"c,omitempty"`
	// Updates is set once the user's server has sent a profile update
	// since the answer: it tells every change, so member events are no
	// longer heeded.
	Updates bool `json:"u,omitempty"`
}

// fresh reports whether e may answer a lookup at now.
func (e *entry) fresh(now time.Time, ttl time.Duration) bool {
	until := time.UnixMilli(e.Queried).Add(ttl)
	if e.Check != 0 && e.Check < until.UnixMilli() {
		until = time.UnixMilli(e.Check)
	}
	return now.Before(until)
}

// json is e's profile as the client API answers it.
func (e *entry) json() json.RawMessage {
	if e.Fields == nil {
		return json.RawMessage("{}")
	}
	b, _ := json.Marshal(e.Fields)
	return b
}

func key(user string) []byte { return storage.Key("fp", user) }

// read returns user's entry, or nil when the cache holds none.
func (c *Cache) read(user string) (*entry, error) {
	v, err := c.opts.Store.Get(key(user))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("profiles: read %s: %w", user, err)
	}
	var e entry
	if err := json.Unmarshal(v, &e); err != nil {
		return nil, fmt.Errorf("profiles: entry of %s: %w", user, err)
	}
	return &e, nil
}

// put writes user's entry and waits until it is durable.
func (c *Cache) put(user string, e *entry) error {
	c.writing.Lock()
	defer c.writing.Unlock()
	return c.write(user, e)
}

func (c *Cache) write(user string, e *entry) error {
	v, err := json.Marshal(e)
	if err != nil {
		return err
	}
	var b storage.Batch
	b.Set(key(user), v)
	if err := c.opts.Store.CommitSync(&b); err != nil {
		return fmt.Errorf("profiles: write %s: %w", user, err)
	}
	return nil
}

// remove deletes user's entry.
func (c *Cache) remove(user string) error {
	c.writing.Lock()
	defer c.writing.Unlock()
	var b storage.Batch
	b.Delete(key(user))
	if err := c.opts.Store.CommitSync(&b); err != nil {
		return fmt.Errorf("profiles: delete %s: %w", user, err)
	}
	return nil
}
