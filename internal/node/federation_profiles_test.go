package node_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"persona/config"
	"persona/internal/testnode"
)

// profileOf reads user's profile (or its field key) through cli's server.
func profileOf(cli *mautrix.Client, user id.UserID, key ...string) (map[string]any, error) {
	path := []any{"v3", "profile", user}
	for _, k := range key {
		path = append(path, k)
	}
	var out map[string]any
	_, err := cli.MakeRequest(ctx, http.MethodGet, cli.BuildClientURL(path...), nil, &out)
	return out, err
}

// matrixError is the HTTP status and errcode of a failed client request.
func matrixError(err error) (int, string) {
	var he mautrix.HTTPError
	if !errors.As(err, &he) || he.Response == nil {
		return 0, ""
	}
	code := ""
	if he.RespError != nil {
		code = he.RespError.ErrCode
	}
	return he.Response.StatusCode, code
}

// wantError fails unless err is a Matrix error of status and errcode.
func wantError(t *testing.T, what string, err error, status int, errcode string) {
	t.Helper()
	if got, code := matrixError(err); got != status || code != errcode {
		t.Fatalf("%s: got %v (%d %s), want %d %s", what, err, got, code, status, errcode)
	}
}

// metric sums the samples of name in n's /metrics whose labels hold every
// one of labels (`key="value"`).
func metric(t *testing.T, n *testnode.Node, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + n.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
next:
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		sample, value, _ := strings.Cut(line, "} ")
		for _, l := range labels {
			if !strings.Contains(sample, l) {
				continue next
			}
		}
		if !strings.Contains(line, "} ") {
			_, value, _ = strings.Cut(line, " ")
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("metric %s: %v", line, err)
		}
		sum += v
	}
	return sum
}

// profileQueriesAnswered counts the profile queries n's federation
// listener answered.
func profileQueriesAnswered(t *testing.T, n *testnode.Node) float64 {
	t.Helper()
	return metric(t, n, "persona_federation_request_duration_seconds_count", `route="GET /_matrix/federation/v1/query/profile"`)
}

// signedProfileQuery sends GET /query/profile for user to server, signed
// by from, and returns the profile or the status and errcode it answered.
func signedProfileQuery(t *testing.T, from *testnode.Node, server, user string) (map[string]any, int, string) {
	t.Helper()
	fed := from.Federation()
	me := fed.Identity()
	req := fclient.NewFederationRequest(http.MethodGet, me.ServerName, spec.ServerName(server),
		"/_matrix/federation/v1/query/profile?user_id="+url.QueryEscape(user))
	if err := req.Sign(me.ServerName, me.KeyID, me.PrivateKey); err != nil {
		t.Fatal(err)
	}
	hreq, err := req.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	err = fed.Client().DoRequestAndParseResponse(ctx, hreq, &out)
	var he gomatrix.HTTPError
	switch {
	case err == nil:
		return out, http.StatusOK, ""
	case errors.As(err, &he):
		var re gomatrix.RespError
		_ = json.Unmarshal(he.Contents, &re)
		return nil, he.Code, re.ErrCode
	}
	t.Fatalf("query %s at %s: %v", user, server, err)
	return nil, 0, ""
}

// TestRemoteProfileIsQueriedOnce: a client of A reads a user of B's
// profile, custom fields included. Twenty concurrent reads cost B one
// query, so do the single-field reads after them and A's restart (the
// cache is on disk); a user B does not have costs one query however often
// it is asked for (404), and so does a user of a server that is down
// (502).
func TestRemoteProfileIsQueriedOnce(t *testing.T) {
	t.Parallel()
	aAddr, aDir := freeAddr(t), t.TempDir()
	atAddr := func(c *config.Config) {
		c.Listen.Federation, c.ServerName, c.Federation.InsecureSkipVerify = aAddr, aAddr, true
	}
	a := testnode.Start(t, aDir, atAddr)
	b := testnode.Start(t, "", byAddress(t))
	alice, bob := a.Register("alice"), b.Register("bob")
	for key, value := range map[string]string{"displayname": "Bob", "avatar_url": "mxc://b.example/bob", "org.example.pronouns": "they/them"} {
		if err := putProfile(bob, key, value, nil); err != nil {
			t.Fatalf("bob sets %s: %v", key, err)
		}
	}
	want := map[string]any{"displayname": "Bob", "avatar_url": "mxc://b.example/bob", "org.example.pronouns": "they/them"}

	const readers = 20
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for range readers {
		wg.Go(func() {
			got, err := profileOf(alice, bob.UserID)
			if err == nil && !equalJSON(got, want) {
				err = errors.New("profile " + toJSON(got))
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("alice reads bob's profile: %v", err)
		}
	}
	for key, value := range want {
		got, err := profileOf(alice, bob.UserID, key)
		if err != nil || got[key] != value || len(got) != 1 {
			t.Fatalf("alice reads bob's %s: %v %v", key, got, err)
		}
	}
	_, err := profileOf(alice, bob.UserID, "org.example.unset")
	wantError(t, "a field bob has not set", err, http.StatusNotFound, "M_NOT_FOUND")
	if n := profileQueriesAnswered(t, b); n != 1 {
		t.Fatalf("B answered %v profile queries, want 1", n)
	}
	if q, s := metric(t, a, "persona_remote_profile_lookups_total", `source="query"`), metric(t, a, "persona_remote_profile_lookups_total", `source="shared"`); q != 1 || s < 1 {
		t.Errorf("A's lookups: %v made the query, %v shared it; want 1 and some", q, s)
	}

	nobody := id.UserID("@nobody:" + b.Config.ServerName)
	for range 5 {
		_, err := profileOf(alice, nobody)
		wantError(t, "a user B does not have", err, http.StatusNotFound, "M_NOT_FOUND")
	}
	if n := profileQueriesAnswered(t, b); n != 2 {
		t.Fatalf("B answered %v profile queries after five reads of a user it lacks, want 2", n)
	}
	down := id.UserID("@ghost:" + freeAddr(t))
	for range 5 {
		_, err := profileOf(alice, down)
		wantError(t, "a user of a server that is down", err, http.StatusBadGateway, "M_UNKNOWN")
	}
	for result, want := range map[string]float64{"found": 1, "not_found": 1, "unreachable": 1} {
		if got := metric(t, a, "persona_remote_profile_queries_total", `result="`+result+`"`); got != want {
			t.Errorf("A's queries with result %s: %v, want %v", result, got, want)
		}
	}

	a.Stop()
	a = testnode.Start(t, aDir, atAddr)
	if got, err := profileOf(a.Client(alice), bob.UserID); err != nil || !equalJSON(got, want) {
		t.Fatalf("after A's restart, bob's profile: %v %v", got, err)
	}
	if n := profileQueriesAnswered(t, b); n != 2 {
		t.Fatalf("B answered %v profile queries after A's restart, want still 2", n)
	}
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func equalJSON(a, b any) bool { return toJSON(a) == toJSON(b) }

// TestMemberEventsRefreshTheRemoteProfileCache: bob of B shares two rooms
// with A. Before B has sent a profile update, his member events are what
// refreshes A's cache of him: a change in a room that had a name of its
// own is not taken, one in a room that showed the cached name is (a
// per-room name there is the case the rule cannot tell apart, checked by a
// query VerifyAfter later). Once B's profile update EDUs arrive they carry
// his changes, and his member events are no longer heeded. Readers on A
// all along, with every event and update, cost B one query.
func TestMemberEventsRefreshTheRemoteProfileCache(t *testing.T) {
	t.Parallel()
	a := testnode.Start(t, "", byAddress(t))
	b := testnode.Start(t, "", byAddress(t))
	alice, bob := a.Register("alice"), b.Register("bob")
	var rooms [2]id.RoomID
	for i := range rooms {
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		rooms[i] = created.RoomID
		if _, err := bob.JoinRoom(ctx, string(rooms[i]), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
			t.Fatalf("bob joins through B: %v", err)
		}
		waitFor(t, 20*time.Second, "A's room to hold bob", func() bool { return memberName(ctx, alice, rooms[i], bob.UserID) == "bob" })
	}
	own, global := rooms[0], rooms[1]
	roomName := func(room id.RoomID, name string) {
		t.Helper()
		setRoomNick(t, bob, room, name)
		waitFor(t, 20*time.Second, "bob's name in a room on A", func() bool { return memberName(ctx, alice, room, bob.UserID) == name })
	}
	roomName(own, "Bob here")

	cachedName := func() string {
		t.Helper()
		p, err := profileOf(alice, bob.UserID)
		if err != nil {
			t.Fatalf("alice reads bob's profile: %v", err)
		}
		name, _ := p["displayname"].(string)
		return name
	}
	if got := cachedName(); got != "bob" {
		t.Fatalf("bob's profile on A: %q, want his global name", got)
	}
	stop, readers := make(chan struct{}), sync.WaitGroup{}
	for range 4 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := profileOf(alice, bob.UserID); err != nil {
					t.Errorf("a reader of bob's profile: %v", err)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	defer func() { close(stop); readers.Wait() }()
	updates := func(source string) float64 {
		return metric(t, a, "persona_remote_profile_cache_updates_total", `source="`+source+`"`)
	}

	roomName(own, "Bob here again")
	if got := cachedName(); got != "bob" {
		t.Fatalf("a room's own name reached the cache: %q", got)
	}
	roomName(global, "Robert")
	waitFor(t, 5*time.Second, "the member event in A's cache", func() bool { return cachedName() == "Robert" })
	if n := updates("member_event"); n != 1 {
		t.Fatalf("member events taken: %v, want 1", n)
	}

	for _, name := range []string{"Bob 2", "Bob 3"} { // both rooms keep their own names: B's updates alone carry these
		rename(t, bob, name, nil)
		waitFor(t, 20*time.Second, "bob's rename in A's cache", func() bool { return cachedName() == name })
	}
	roomName(global, "Robbie")
	if err := putProfile(bob, "avatar_url", "mxc://b.example/new", nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "bob's avatar in A's cache", func() bool {
		p, err := profileOf(alice, bob.UserID, "avatar_url")
		return err == nil && p["avatar_url"] == "mxc://b.example/new"
	})
	if got := cachedName(); got != "Bob 3" {
		t.Fatalf("bob's name on A once B sends updates: %q, want his global one", got)
	}
	if m, e := updates("member_event"), updates("edu"); m != 1 || e != 3 {
		t.Fatalf("A's cache changed by %v member events and %v updates, want 1 and 3", m, e)
	}
	if n := profileQueriesAnswered(t, b); n != 1 {
		t.Fatalf("B answered %v profile queries, want 1", n)
	}
}

// TestProfileQueriesOtherServersMayNotMake: a server with
// federation.allow_profile_lookup false answers a signed query 403
// M_FORBIDDEN, which reaches A's client as it is. Under
// profile.limit_to_shared_rooms a server answers only servers with a user
// in a room with the user asked for, and its own clients may read only
// the remote users they share a room with.
func TestProfileQueriesOtherServersMayNotMake(t *testing.T) {
	t.Parallel()
	a := testnode.Start(t, "", byAddress(t))
	closed := testnode.Start(t, "", func(c *config.Config) {
		byAddress(t)(c)
		c.Federation.AllowProfileLookup = false
	})
	shy := testnode.Start(t, "", func(c *config.Config) {
		byAddress(t)(c)
		c.Profile.LimitToSharedRooms = true
	})
	alice, carol, dave := a.Register("alice"), closed.Register("carol"), shy.Register("dave")

	if _, status, code := signedProfileQuery(t, a, closed.Config.ServerName, carol.UserID.String()); status != http.StatusForbidden || code != "M_FORBIDDEN" {
		t.Fatalf("a signed query to a server that shares no profiles: %d %s", status, code)
	}
	_, err := profileOf(alice, carol.UserID)
	wantError(t, "alice reads carol's profile", err, http.StatusForbidden, "M_FORBIDDEN")

	if _, status, code := signedProfileQuery(t, a, shy.Config.ServerName, dave.UserID.String()); status != http.StatusForbidden || code != "M_FORBIDDEN" {
		t.Fatalf("a signed query for a user who shares no room with A's: %d %s", status, code)
	}
	_, err = profileOf(dave, alice.UserID)
	wantError(t, "dave reads the profile of alice, with whom he shares no room", err, http.StatusForbidden, "M_FORBIDDEN")

	created, err := dave.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.JoinRoom(ctx, string(created.RoomID), &mautrix.ReqJoinRoom{Via: []string{shy.Config.ServerName}}); err != nil {
		t.Fatalf("alice joins dave's room: %v", err)
	}
	waitFor(t, 20*time.Second, "dave's room to hold alice", func() bool { return memberName(ctx, dave, created.RoomID, alice.UserID) == "alice" })
	if p, status, code := signedProfileQuery(t, a, shy.Config.ServerName, dave.UserID.String()); status != http.StatusOK || p["displayname"] != "dave" {
		t.Fatalf("a signed query for a user who shares a room with A's: %d %s %v", status, code, p)
	}
	if p, err := profileOf(dave, alice.UserID); err != nil || p["displayname"] != "alice" {
		t.Fatalf("dave reads alice's profile once they share a room: %v %v", p, err)
	}
	if _, status, _ := signedProfileQuery(t, a, shy.Config.ServerName, "@nobody:"+shy.Config.ServerName); status != http.StatusForbidden {
		t.Fatalf("a query for a user the server lacks answered %d: it must not tell such a user from one who shares no room", status)
	}
}

// TestProfileUpdateEDURefreshesTheCache: a profile update EDU (MSC4259)
// from a user's own server changes B's cached profile, custom fields
// included, with no query; one about a user of another server is dropped.
func TestProfileUpdateEDURefreshesTheCache(t *testing.T) {
	t.Parallel()
	a := testnode.Start(t, "", byAddress(t))
	b := testnode.Start(t, "", byAddress(t))
	c := testnode.Start(t, "", byAddress(t))
	alice, bob, carol := a.Register("alice"), b.Register("bob"), c.Register("carol")
	if err := putProfile(alice, "org.example.pronouns", "she/her", nil); err != nil {
		t.Fatal(err)
	}
	for _, u := range []id.UserID{alice.UserID, carol.UserID} {
		if _, err := profileOf(bob, u); err != nil {
			t.Fatalf("bob reads %s: %v", u, err)
		}
	}
	send := func(txn string, edus ...gomatrixserverlib.EDU) {
		t.Helper()
		resp, err := a.Federation().Client().SendTransaction(ctx, gomatrixserverlib.Transaction{
			TransactionID: gomatrixserverlib.TransactionID(txn), Origin: spec.ServerName(a.Config.ServerName),
			Destination: spec.ServerName(b.Config.ServerName), OriginServerTS: spec.AsTimestamp(time.Now()), EDUs: edus,
		})
		if err != nil {
			t.Fatalf("A sends B transaction %s: %v (%+v)", txn, err, resp)
		}
	}
	update := func(typ string, user id.UserID, fields string) gomatrixserverlib.EDU {
		return gomatrixserverlib.EDU{Type: typ, Content: spec.RawJSON(`{"user_id":"` + user.String() + `","fields":` + fields + `}`)}
	}
	send("edu1", update("uk.tcpip.msc4259.profile", alice.UserID, `{"displayname":"Alice","org.example.pronouns":null,"org.example.lang":"en"}`),
		update("m.profile", carol.UserID, `{"displayname":"Not Carol"}`))
	want := map[string]any{"displayname": "Alice", "org.example.lang": "en"}
	if got, err := profileOf(bob, alice.UserID); err != nil || !equalJSON(got, want) {
		t.Fatalf("alice's profile on B after her server's update: %v %v, want %v", got, err, want)
	}
	if got, err := profileOf(bob, carol.UserID); err != nil || got["displayname"] != "carol" {
		t.Fatalf("carol's profile on B after A spoke for her: %v %v", got, err)
	}
	send("edu2", update("m.profile", alice.UserID, `{"displayname":"Alice L."}`))
	if got, err := profileOf(bob, alice.UserID, "displayname"); err != nil || got["displayname"] != "Alice L." {
		t.Fatalf("alice's name on B after an m.profile update: %v %v", got, err)
	}
	if n := profileQueriesAnswered(t, a); n != 1 {
		t.Fatalf("A answered %v profile queries, want 1", n)
	}
	if n := metric(t, b, "persona_remote_profile_cache_updates_total", `source="edu"`); n != 2 {
		t.Fatalf("B took %v profile EDUs into its cache, want 2", n)
	}
}

// TestProfileChangesReachSharingServersAsEDUs: alice of A changes her
// profile in ways no member event carries (a custom field set and
// removed, a rename kept out of rooms, the whole profile replaced); B,
// where bob shares a room with her, sees each in its cache through a
// profile update EDU, with no query. C, which shares no room with her, is
// sent nothing.
func TestProfileChangesReachSharingServersAsEDUs(t *testing.T) {
	t.Parallel()
	a := testnode.Start(t, "", byAddress(t))
	b := testnode.Start(t, "", byAddress(t))
	c := testnode.Start(t, "", byAddress(t))
	alice, bob, carol := a.Register("alice"), b.Register("bob"), c.Register("carol")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(ctx, string(created.RoomID), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
		t.Fatalf("bob joins through B: %v", err)
	}
	waitFor(t, 20*time.Second, "A's room to hold bob", func() bool { return memberName(ctx, alice, created.RoomID, bob.UserID) == "bob" })
	for _, reader := range []*mautrix.Client{bob, carol} {
		if _, err := profileOf(reader, alice.UserID); err != nil {
			t.Fatalf("%s reads alice's profile: %v", reader.UserID, err)
		}
	}
	seen := func(what string, want map[string]any) {
		t.Helper()
		waitFor(t, 20*time.Second, what+" on B", func() bool {
			got, err := profileOf(bob, alice.UserID)
			return err == nil && equalJSON(got, want)
		})
	}

	if err := putProfile(alice, "org.example.lang", "fr", nil); err != nil {
		t.Fatal(err)
	}
	seen("a custom field set", map[string]any{"displayname": "alice", "org.example.lang": "fr"})
	if err := deleteProfile(alice, "org.example.lang", nil); err != nil {
		t.Fatal(err)
	}
	seen("a custom field removed", map[string]any{"displayname": "alice"})
	rename(t, alice, "Alice", map[string]string{"propagate_to": "none"})
	seen("a rename kept out of rooms", map[string]any{"displayname": "Alice"})
	replace := alice.BuildClientURL("v3", "profile", alice.UserID)
	if _, err := alice.MakeRequest(ctx, http.MethodPut, replace, map[string]any{"org.example.lang": "de", "m.tz": "Europe/Berlin"}, nil); err != nil {
		t.Fatalf("alice replaces her profile: %v", err)
	}
	seen("the whole profile replaced", map[string]any{"org.example.lang": "de", "m.tz": "Europe/Berlin"})

	if n := profileQueriesAnswered(t, a); n != 2 {
		t.Fatalf("A answered %v profile queries, want 2 (one from B, one from C)", n)
	}
	if n := metric(t, b, "persona_remote_profile_cache_updates_total", `source="edu"`); n != 4 {
		t.Fatalf("B took %v profile EDUs into its cache, want 4", n)
	}
	if toB, toC := metric(t, b, "persona_federation_transactions_received_total"), metric(t, c, "persona_federation_transactions_received_total"); toB == 0 || toC != 0 {
		t.Fatalf("transactions received: %v by B, %v by C, which shares no room with alice; want some and none", toB, toC)
	}
	if got, err := profileOf(carol, alice.UserID); err != nil || !equalJSON(got, map[string]any{"displayname": "alice"}) {
		t.Fatalf("alice's profile on C: %v %v, want the one C asked for", got, err)
	}
}

// TestRemoteProfileTimeoutIs504: a user's server that takes connections
// and never answers costs A's client a 504 M_UNKNOWN once the query's
// time is up, never a 500.
func TestRemoteProfileTimeoutIs504(t *testing.T) {
	t.Parallel()
	a := testnode.Start(t, "", byAddress(t))
	mute := testnode.SilentServer(t)
	alice := a.Register("alice")
	_, err := profileOf(alice, id.UserID("@mute:"+mute))
	wantError(t, "a user of a server that never answers", err, http.StatusGatewayTimeout, "M_UNKNOWN")
}
