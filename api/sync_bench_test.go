package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"persona/config"
	"persona/internal/testnode"
)

// The /sync fixture: one user joined to syncRooms rooms, each shared with
// three of syncOthers other users, holding syncMessages messages, a room
// name, a per-room displayname of one member (and of the syncing user in
// every tenth room); every other user's presence is online with a status.
const (
	syncRooms    = 50
	syncOthers   = 8
	syncMessages = 20
	syncSetupPar = 8 // rooms set up at a time
)

// syncFixture is a node with the fixture in it.
type syncFixture struct {
	url, token string
	others     []*mautrix.Client
	rooms      []id.RoomID
}

// newSyncFixture builds the fixture: about 1,300 fsynced requests, a few
// seconds on two cores.
func newSyncFixture(b *testing.B) *syncFixture {
	b.Helper()
	n := testnode.Start(b, "", func(c *config.Config) { c.Profile.RateLimit.Burst = 0 })
	ctx := context.Background()
	me := n.Register("syncer")
	f := &syncFixture{url: n.URL + "/_matrix/client/v3/sync", token: me.AccessToken, rooms: make([]id.RoomID, syncRooms)}
	for i := range syncOthers {
		c := n.Register(fmt.Sprintf("member%d", i))
		msg := fmt.Sprintf("member %d is here", i)
		if err := c.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: msg}); err != nil {
			b.Fatal(err)
		}
		f.others = append(f.others, c)
	}
	var wg sync.WaitGroup
	errs := make([]error, syncRooms)
	sem := make(chan struct{}, syncSetupPar)
	for i := range syncRooms {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			f.rooms[i], errs[i] = f.fillRoom(ctx, me, i)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	return f
}

// fillRoom creates room i with its members, names and messages.
func (f *syncFixture) fillRoom(ctx context.Context, me *mautrix.Client, i int) (id.RoomID, error) {
	created, err := me.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: fmt.Sprintf("Room %d", i), Preset: "public_chat"})
	if err != nil {
		return "", err
	}
	room := created.RoomID
	members := []*mautrix.Client{me}
	for _, k := range []int{i, i + 1, i + 3} {
		c := f.others[k%syncOthers]
		if _, err := c.JoinRoomByID(ctx, room); err != nil {
			return "", err
		}
		members = append(members, c)
	}
	nick := func(c *mautrix.Client, name string) error {
		_, err := c.SendStateEvent(ctx, room, event.StateMember, c.UserID.String(),
			map[string]any{"membership": "join", "displayname": name})
		return err
	}
	if err := nick(members[1], fmt.Sprintf("%s in room %d", members[1].UserID.Localpart(), i)); err != nil {
		return "", err
	}
	if i%10 == 0 {
		if err := nick(me, fmt.Sprintf("me in room %d", i)); err != nil {
			return "", err
		}
	}
	for m := range syncMessages {
		if _, err := members[m%len(members)].SendText(ctx, room, fmt.Sprintf("message %d in room %d", m, i)); err != nil {
			return "", err
		}
	}
	return room, nil
}

// syncResult is what the benchmarks check of an answer.
type syncResult struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events []json.RawMessage `json:"events"`
			} `json:"timeline"`
			State struct {
				Events []json.RawMessage `json:"events"`
			} `json:"state"`
		} `json:"join"`
	} `json:"rooms"`
	Presence struct {
		Events []json.RawMessage `json:"events"`
	} `json:"presence"`
}

// get does one /sync with query q and returns the raw answer.
func (f *syncFixture) get(b *testing.B, cl *http.Client, q url.Values) []byte {
	req, _ := http.NewRequest("GET", f.url+"?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+f.token)
	resp, err := cl.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("sync %v: status %d, %v: %.200s", q, resp.StatusCode, err, body)
	}
	return body
}

func decodeSync(b *testing.B, body []byte) *syncResult {
	var r syncResult
	if err := json.Unmarshal(body, &r); err != nil {
		b.Fatal(err)
	}
	return &r
}

// benchInitialSync times initial syncs with query q; check sees one answer
// before the timer starts.
func (f *syncFixture) benchInitialSync(b *testing.B, q url.Values, check func(*syncResult)) {
	cl := benchClient()
	check(decodeSync(b, f.get(b, cl, q)))
	b.ReportAllocs()
	b.ResetTimer()
	size := 0
	for range b.N {
		size = len(f.get(b, cl, q))
	}
	b.ReportMetric(float64(size), "resp-bytes/op")
}

// BenchmarkSync measures /sync of a user in syncRooms rooms. Its set-up
// runs once, outside the timed parts; it runs only with -bench.
func BenchmarkSync(b *testing.B) {
	f := newSyncFixture(b)
	wantRooms := func(b *testing.B, timeline, maxState int) func(*syncResult) {
		return func(r *syncResult) {
			if len(r.Rooms.Join) != syncRooms || len(r.Presence.Events) < syncOthers {
				b.Fatalf("initial sync: %d rooms, %d presence events", len(r.Rooms.Join), len(r.Presence.Events))
			}
			for room, j := range r.Rooms.Join {
				if len(j.Timeline.Events) != timeline || len(j.State.Events) > maxState {
					b.Fatalf("room %s: %d timeline events (want %d), %d state events (want <= %d)",
						room, len(j.Timeline.Events), timeline, len(j.State.Events), maxState)
				}
			}
		}
	}
	b.Run("initial", func(b *testing.B) {
		f.benchInitialSync(b, url.Values{"timeout": {"0"}}, wantRooms(b, 10, 100))
	})
	b.Run("initial_lazy_members", func(b *testing.B) {
		filter := `{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":5}}}`
		// Lazy loading leaves out the members who sent none of the 5
		// messages: at most create, power levels, join rules, history
		// visibility, name and 4 members.
		f.benchInitialSync(b, url.Values{"timeout": {"0"}, "filter": {filter}}, wantRooms(b, 5, 9))
	})
	b.Run("incremental_one_message", func(b *testing.B) {
		cl := benchClient()
		since := decodeSync(b, f.get(b, cl, url.Values{"timeout": {"0"}})).NextBatch
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		size := 0
		for i := range b.N {
			b.StopTimer()
			r := i % syncRooms
			room, sender := f.rooms[r], f.others[r%syncOthers] // a member of room r
			if _, err := sender.SendText(ctx, room, fmt.Sprintf("new %d", i)); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			body := f.get(b, cl, url.Values{"timeout": {"0"}, "since": {since}})
			b.StopTimer()
			size = len(body)
			got := decodeSync(b, body)
			if j, ok := got.Rooms.Join[string(room)]; len(got.Rooms.Join) != 1 || !ok || len(j.Timeline.Events) != 1 {
				b.Fatalf("incremental sync after one message in %s: %.300s", room, body)
			}
			since = got.NextBatch
			b.StartTimer()
		}
		b.ReportMetric(float64(size), "resp-bytes/op")
	})
}
