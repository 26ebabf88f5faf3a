package main

import (
	"fmt"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// TestCrashMidJoinsConverges runs a node as a child process. A user joins
// 300 rooms while renaming, every other rename with propagate_to=unchanged,
// so that joins carry profiles older than the user's and are owed
// snapshots. The node is SIGKILLed mid-way, after an acknowledged
// propagate_to=unchanged rename, and restarted on the same data; the joins
// left undone are done again. With max_backlog at 4, rooms whose cursors
// the crash left behind get folds. Every room must end with the last name,
// and no room's timeline may show an older name after a newer one.
func TestCrashMidJoinsConverges(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: starts a node twice")
	}
	const rooms = 300
	transport := keepAlive(t)
	addrs := freeLoopbackAddrs(t, 2)
	cfgPath := filepath.Join(t.TempDir(), "persona.yaml")
	// A small max_backlog: rooms whose cursors lag after the restart get
	// folds, as with many more renames before the kill on a slower machine.
	cfg := fmt.Sprintf("server_name: \"localhost\"\ndata_dir: %q\nlisten:\n  client: %q\n  metrics: %q\n  federation: \"\"\nregistration:\n  shared_secret: %q\npropagation:\n  max_backlog: 4\n",
		filepath.Join(t.TempDir(), "data"), addrs[0], addrs[1], crashSecret)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	base := "http://" + addrs[0]
	node := startCrashChild(t, cfgPath, base)

	// Admins, so that no rate limit slows the renames.
	owner, err := registerWithSecret(base, crashSecret, "owner", "", true)
	if err != nil {
		t.Fatalf("register: %v\n%s", err, node.out.tail())
	}
	reg, err := registerWithSecret(base, crashSecret, "joiner", "", true)
	if err != nil {
		t.Fatalf("register: %v\n%s", err, node.out.tail())
	}
	c := &crashClient{base: base, user: reg.UserID, token: reg.AccessToken}
	ids, err := createPublicRooms(base, owner.AccessToken, rooms)
	if err != nil {
		t.Fatalf("createRoom: %v\n%s", err, node.out.tail())
	}
	join := func(room string) error {
		return call(http.MethodPost, base+"/_matrix/client/v3/rooms/"+neturl.PathEscape(room)+"/join", c.token, map[string]any{}, nil)
	}

	// Joins in the background, renames in the foreground; the kill lands
	// right after an acknowledged rename once a third of the joins are done,
	// a propagate_to=unchanged one: a fold ending with it is taken only by a
	// room that has the name before.
	var joined atomic.Int64
	go func() {
		for _, room := range ids {
			if join(room) != nil {
				return // the node is gone
			}
			joined.Add(1)
		}
	}()
	var written []string
	for joined.Load() < rooms/3 || len(written)%2 == 1 {
		name := "v" + strconv.Itoa(len(written)+1)
		url := base + "/_matrix/client/v3/profile/" + neturl.PathEscape(c.user) + "/displayname"
		if len(written)%2 == 1 {
			url += "?propagate_to=unchanged"
		}
		if err := call(http.MethodPut, url, c.token, map[string]string{"displayname": name}, nil); err != nil {
			t.Fatalf("rename to %s: %v\n%s", name, err, node.out.tail())
		}
		written = append(written, name)
		time.Sleep(3 * time.Millisecond) // a room's whole timeline is checked, page by page (verifyConverged)
	}
	node.kill()
	transport.CloseIdleConnections()
	t.Logf("SIGKILL after %d renames, %d of %d joins answered", len(written), joined.Load(), rooms)

	node = startCrashChild(t, cfgPath, base)
	for _, room := range ids { // a join already done is answered again, unchanged
		if err := join(room); err != nil {
			t.Fatalf("join %s after the restart: %v\n%s", room, err, node.out.tail())
		}
	}
	if _, err := c.waitSettled(60 * time.Second); err != nil {
		t.Fatalf("after restart: %v\n%s", err, node.out.tail())
	}
	c.verifyConverged(t, ids, written)
}
