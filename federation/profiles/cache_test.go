package profiles_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"persona/config"
	"persona/federation/profiles"
	"persona/internal/testnode"
	"persona/metrics"
	"persona/storage"
)

// The cache runs against real servers: node a lends it its identity and
// client (a serves the key b checks a's signature with), node b is the
// user's server; the cache keeps its entries in a badger of its own.

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// byAddress names a node after its federation listener.
func byAddress(t *testing.T) func(*config.Config) {
	return func(c *config.Config) {
		c.Listen.Federation = freeAddr(t)
		c.ServerName = c.Listen.Federation
		c.Federation.InsecureSkipVerify = true
	}
}

// clock is a settable time for the cache's expiries.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// fixture is a cache on node a's identity, and its metrics.
type fixture struct {
	cache *profiles.Cache
	m     *metrics.Metrics
	clock *clock
}

// newCache builds a cache that queries as a, with o's tuning.
func newCache(t *testing.T, a *testnode.Node, o profiles.Options) *fixture {
	t.Helper()
	st, err := storage.Open(t.TempDir(), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{m: metrics.New(nil), clock: &clock{now: time.Now()}}
	o.Store, o.Client, o.Identity, o.Metrics, o.Now = st, a.Federation().Client(), a.Federation().Identity(), f.m, f.clock.Now
	if f.cache, err = profiles.New(o); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.cache.Close()
		_ = st.Close()
	})
	return f
}

// metric is the value of one sample of the cache's metrics (name and
// labels as exported), 0 when absent.
func (f *fixture) metric(t *testing.T, sample string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	f.m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for line := range strings.Lines(rec.Body.String()) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), sample+" "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	return 0
}

// queriesAnswered counts the profile queries n's federation listener
// answered.
func queriesAnswered(t *testing.T, n *testnode.Node) int {
	t.Helper()
	resp, err := http.Get("http://" + n.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	total := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "persona_federation_request_duration_seconds_count{") &&
			strings.Contains(line, `route="GET /_matrix/federation/v1/query/profile"`) {
			_, v, _ := strings.Cut(line, "} ")
			n, _ := strconv.Atoi(v)
			total += n
		}
	}
	return total
}

// lookupName returns the displayname of user's profile as c answers it.
func lookupName(t *testing.T, c *profiles.Cache, user string) string {
	t.Helper()
	raw, err := c.Lookup(context.Background(), user)
	if err != nil {
		t.Fatalf("lookup %s: %v", user, err)
	}
	var p struct {
		Displayname string `json:"displayname"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		t.Fatal(err)
	}
	return p.Displayname
}

func TestOptionsNameEveryMissingPart(t *testing.T) {
	t.Parallel()
	_, err := profiles.New(profiles.Options{TTL: -time.Second})
	for _, field := range []string{"Store", "Client", "Identity", "TTL"} {
		if err == nil || !strings.Contains(err.Error(), "option "+field+" ") {
			t.Errorf("New with no %s: %v", field, err)
		}
	}
}

// TestFailuresAreRememberedForErrorTTL: a user the server lacks and a
// server that is down cost one query each until ErrorTTL has passed, then
// one more.
func TestFailuresAreRememberedForErrorTTL(t *testing.T) {
	t.Parallel()
	a := testnode.Start(t, "", byAddress(t))
	b := testnode.Start(t, "", byAddress(t))
	f := newCache(t, a, profiles.Options{ErrorTTL: time.Minute})
	ctx := context.Background()
	nobody, ghost := "@nobody:"+b.Config.ServerName, "@ghost:"+freeAddr(t)
	for range 3 {
		if _, err := f.cache.Lookup(ctx, nobody); !errors.Is(err, profiles.ErrNotFound) {
			t.Fatalf("lookup of a user the server lacks: %v", err)
		}
		if _, err := f.cache.Lookup(ctx, ghost); !errors.Is(err, profiles.ErrNoAnswer) {
			t.Fatalf("lookup of a user of a server that is down: %v", err)
		}
	}
	if n := queriesAnswered(t, b); n != 1 {
		t.Fatalf("b answered %d queries, want 1", n)
	}
	want := map[string]float64{
		`persona_remote_profile_queries_total{result="not_found"}`:   1,
		`persona_remote_profile_queries_total{result="unreachable"}`: 1,
		`persona_remote_profile_lookups_total{source="query"}`:       2,
		`persona_remote_profile_lookups_total{source="negative"}`:    4,
	}
	for sample, n := range want {
		if got := f.metric(t, sample); got != n {
			t.Errorf("%s = %v, want %v", sample, got, n)
		}
	}

	f.clock.Add(time.Minute)
	if _, err := f.cache.Lookup(ctx, nobody); !errors.Is(err, profiles.ErrNotFound) {
		t.Fatalf("lookup after ErrorTTL: %v", err)
	}
	if n := queriesAnswered(t, b); n != 2 {
		t.Fatalf("b answered %d queries once ErrorTTL passed, want 2", n)
	}
}

// TestExpiredEntryAnswersWhileItsServerIsDown: past the TTL the entry is
// asked for again; while its server does not answer, the old entry
// answers, and the failure is remembered like any other.
func TestExpiredEntryAnswersWhileItsServerIsDown(t *testing.T) {
	t.Parallel()
	a := testnode.Start(t, "", byAddress(t))
	b := testnode.Start(t, "", byAddress(t))
	bob := b.Register("bob")
	if err := bob.SetDisplayName(context.Background(), "Bob"); err != nil {
		t.Fatal(err)
	}
	f := newCache(t, a, profiles.Options{TTL: time.Hour})
	if got := lookupName(t, f.cache, bob.UserID.String()); got != "Bob" {
		t.Fatalf("bob's name: %q", got)
	}
	b.Stop()
	f.clock.Add(time.Hour)
	for range 3 {
		if got := lookupName(t, f.cache, bob.UserID.String()); got != "Bob" {
			t.Fatalf("bob's name while b is down: %q", got)
		}
	}
	for sample, n := range map[string]float64{
		`persona_remote_profile_queries_total{result="found"}`:       1,
		`persona_remote_profile_queries_total{result="unreachable"}`: 1,
		`persona_remote_profile_lookups_total{source="stale"}`:       3,
	} {
		if got := f.metric(t, sample); got != n {
			t.Errorf("%s = %v, want %v", sample, got, n)
		}
	}
}

// TestMemberEventsAndUpdates: a member event changes a field the cache
// holds only when the room showed the cached value before it; a value it
// changed is served until VerifyAfter, and then a query checks it. A
// profile update (MSC4259) changes any field of a cached profile, within
// the limits of a profile, and member events are not heeded after it.
func TestMemberEventsAndUpdates(t *testing.T) {
	t.Parallel()
	a := testnode.Start(t, "", byAddress(t))
	b := testnode.Start(t, "", byAddress(t))
	bob, carol := b.Register("bob"), b.Register("carol")
	ctx := context.Background()
	for _, step := range []func() error{
		func() error { return bob.SetDisplayName(ctx, "Bob") },
		func() error { return bob.SetAvatarURL(ctx, id.MustParseContentURI("mxc://b.example/bob")) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	f := newCache(t, a, profiles.Options{VerifyAfter: time.Minute})
	user := bob.UserID.String()
	if got := lookupName(t, f.cache, user); got != "Bob" {
		t.Fatalf("bob's name: %q", got)
	}
	member := func(fields string) json.RawMessage { return json.RawMessage(`{"membership":"join"` + fields + `}`) }
	for _, tc := range []struct {
		name       string
		user       string
		prev, next json.RawMessage
		changed    bool
		wantName   string
	}{
		{"a room with a name of its own", user, member(`,"displayname":"Bob here","avatar_url":"mxc://b.example/bob"`), member(`,"displayname":"Bob there","avatar_url":"mxc://b.example/bob"`), false, "Bob"},
		{"no change", user, member(`,"displayname":"Bob"`), member(`,"displayname":"Bob"`), false, "Bob"},
		{"not a name", user, member(`,"displayname":"Bob"`), member(`,"displayname":7`), false, "Bob"},
		{"a user not cached", carol.UserID.String(), member(`,"displayname":"carol"`), member(`,"displayname":"Carol"`), false, ""},
		{"a room that showed the global name", user, member(`,"displayname":"Bob","avatar_url":"mxc://b.example/bob"`), member(`,"displayname":"Robert","avatar_url":"mxc://b.example/bob"`), true, "Robert"},
		{"the same rename from the next room", user, member(`,"displayname":"Bob"`), member(`,"displayname":"Robert"`), false, "Robert"},
	} {
		changed, err := f.cache.MemberChanged(tc.user, tc.prev, tc.next)
		if err != nil || changed != tc.changed {
			t.Fatalf("%s: changed %v (%v), want %v", tc.name, changed, err, tc.changed)
		}
		if tc.wantName != "" {
			if got := lookupName(t, f.cache, tc.user); got != tc.wantName {
				t.Fatalf("%s: the cache names bob %q, want %q", tc.name, got, tc.wantName)
			}
		}
	}
	changed, err := f.cache.MemberChanged(user, member(`,"displayname":"Robert","avatar_url":"mxc://b.example/bob"`), member(`,"displayname":"Robert"`))
	if err != nil || !changed {
		t.Fatalf("an avatar dropped in a room that showed it: changed %v (%v)", changed, err)
	}
	raw, err := f.cache.Lookup(ctx, user)
	if err != nil || strings.Contains(string(raw), "avatar_url") {
		t.Fatalf("bob's profile once his avatar is dropped: %s %v", raw, err)
	}
	if n := queriesAnswered(t, b); n != 1 {
		t.Fatalf("b answered %d queries before VerifyAfter, want 1", n)
	}

	f.clock.Add(time.Minute)
	if got := lookupName(t, f.cache, user); got != "Bob" {
		t.Fatalf("after VerifyAfter the cache names bob %q, want his server's answer", got)
	}
	if n := queriesAnswered(t, b); n != 2 {
		t.Fatalf("b answered %d queries after VerifyAfter, want 2", n)
	}
	if got := f.metric(t, `persona_remote_profile_cache_updates_total{source="member_event"}`); got != 2 {
		t.Fatalf("member-event updates counted: %v, want 2", got)
	}

	big := json.RawMessage(`"` + strings.Repeat("x", 64<<10) + `"`)
	for _, tc := range []struct {
		name    string
		user    string
		fields  map[string]json.RawMessage
		changed bool
	}{
		{"a name that is no string", user, map[string]json.RawMessage{"displayname": json.RawMessage(`7`)}, false},
		{"a profile over 64 KiB", user, map[string]json.RawMessage{"org.example.big": big}, false},
		{"a user not cached", carol.UserID.String(), map[string]json.RawMessage{"displayname": json.RawMessage(`"C"`)}, false},
		{"nothing new", user, map[string]json.RawMessage{"displayname": json.RawMessage(`"Bob"`)}, false},
		{"a new name and a field dropped", user, map[string]json.RawMessage{"displayname": json.RawMessage(`"Robert"`), "avatar_url": json.RawMessage(`null`)}, true},
	} {
		if changed, err := f.cache.Updated(tc.user, tc.fields); err != nil || changed != tc.changed {
			t.Fatalf("update with %s: changed %v (%v), want %v", tc.name, changed, err, tc.changed)
		}
	}
	if raw, err := f.cache.Lookup(ctx, user); err != nil || string(raw) != `{"displayname":"Robert"}` {
		t.Fatalf("bob's profile after the updates: %s %v", raw, err)
	}
	if changed, err := f.cache.MemberChanged(user, member(`,"displayname":"Robert"`), member(`,"displayname":"Bobby"`)); err != nil || changed {
		t.Fatalf("a member event once bob's server sends updates: changed %v (%v), want no change", changed, err)
	}
}

// TestQueryTimesOutAndCloseEndsQueries: a server that accepts connections
// and never answers fails a lookup with context.DeadlineExceeded after
// RequestTimeout; Close ends a query on its way, whose lookup fails with
// ErrClosed like the lookups after it.
func TestQueryTimesOutAndCloseEndsQueries(t *testing.T) {
	t.Parallel()
	a := testnode.Start(t, "", byAddress(t))
	mute := testnode.SilentServer(t)
	silent := "@mute:" + mute

	f := newCache(t, a, profiles.Options{RequestTimeout: 200 * time.Millisecond})
	_, err := f.cache.Lookup(context.Background(), silent)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, profiles.ErrNoAnswer) {
		t.Fatalf("lookup at a server that never answers: %v", err)
	}

	g := newCache(t, a, profiles.Options{RequestTimeout: time.Minute})
	done := make(chan error, 1)
	go func() {
		_, err := g.cache.Lookup(context.Background(), silent)
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	g.cache.Close()
	select {
	case err := <-done:
		if !errors.Is(err, profiles.ErrClosed) {
			t.Fatalf("a lookup whose query Close ended: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close left a lookup waiting")
	}
	if _, err := g.cache.Lookup(context.Background(), silent); !errors.Is(err, profiles.ErrClosed) {
		t.Fatalf("a lookup after Close: %v", err)
	}
}
