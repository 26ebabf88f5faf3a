package dendrite

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestDendriteServesClients proves the harness gives a working homeserver:
// two registered users share a room, and a rename by one reaches the other
// as a member event through /sync and in the room's state.
func TestDendriteServesClients(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	aliceName, bobName := "alice"+randomHex(3), "bob"+randomHex(3)
	alice := s.Register(t, aliceName, "pw-"+randomHex(8))
	bob := s.Register(t, bobName, "pw-"+randomHex(8))
	if want := id.NewUserID(aliceName, s.ServerName); alice.UserID != want {
		t.Fatalf("alice registered as %s, want %s", alice.UserID, want)
	}
	who, err := bob.Whoami(ctx)
	if err != nil || who.UserID != bob.UserID {
		t.Fatalf("bob's whoami = %v, %v; want %s", who, err, bob.UserID)
	}

	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatalf("alice creates a room: %v", err)
	}
	if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatalf("bob joins %s: %v", room.RoomID, err)
	}
	var first *mautrix.RespSync
	for deadline := time.Now().Add(30 * time.Second); ; { // Dendrite's sync learns of a join a moment after it answers it
		if first, err = bob.SyncRequest(ctx, 0, "", "", false, ""); err != nil {
			t.Fatalf("bob's first sync: %v", err)
		}
		if _, ok := first.Rooms.Join[room.RoomID]; ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob's sync lists joined rooms %v, not %s", slices.Collect(maps.Keys(first.Rooms.Join)), room.RoomID)
		}
		time.Sleep(100 * time.Millisecond)
	}

	display := "Alice " + randomHex(4)
	if err := alice.SetDisplayName(ctx, display); err != nil {
		t.Fatalf("alice renames herself: %v", err)
	}
	waitMemberEvent(ctx, t, bob, first.NextBatch, room.RoomID, alice.UserID, display)

	var member event.MemberEventContent
	if err := bob.StateEvent(ctx, room.RoomID, event.StateMember, alice.UserID.String(), &member); err != nil {
		t.Fatalf("bob reads alice's member state: %v", err)
	}
	if member.Displayname != display || member.Membership != event.MembershipJoin {
		t.Fatalf("alice's member state = %+v, want joined as %q", member, display)
	}
}

// waitMemberEvent syncs as cli from since until the timeline of room holds
// a join event of user with displayname display, failing t when ctx ends.
func waitMemberEvent(ctx context.Context, t *testing.T, cli *mautrix.Client, since string, room id.RoomID, user id.UserID, display string) {
	t.Helper()
	for {
		resp, err := cli.SyncRequest(ctx, 10_000, since, "", false, "")
		if err != nil {
			t.Fatalf("%s syncs waiting for %s's rename to %q: %v", cli.UserID, user, display, err)
		}
		since = resp.NextBatch
		if joined, ok := resp.Rooms.Join[room]; ok {
			for _, evt := range joined.Timeline.Events {
				if evt.Type == event.StateMember && evt.GetStateKey() == user.String() &&
					evt.Content.Raw["displayname"] == display && evt.Content.Raw["membership"] == "join" {
					return
				}
			}
		}
	}
}

// TestDendriteRestartKeepsData stops a peer and starts it again on the same
// folder and ports: the same URLs answer, with the same signing key, the
// old access token, profile and room membership.
func TestDendriteRestartKeepsData(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	alice := s.Register(t, "alice"+randomHex(3), "pw-"+randomHex(8))
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatalf("create room: %v", err)
	}
	display := "Alice " + randomHex(4)
	if err := alice.SetDisplayName(ctx, display); err != nil {
		t.Fatalf("rename: %v", err)
	}
	keysBefore := signingKeys(t, s)
	clientURL, fedURL, name := s.ClientURL, s.FederationURL, s.ServerName

	s.Stop()
	if _, err := alice.Whoami(ctx); err == nil {
		t.Fatal("whoami answered while the peer was stopped")
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}

	if s.ClientURL != clientURL || s.FederationURL != fedURL || s.ServerName != name {
		t.Fatalf("after restart the peer is %s %s %s, was %s %s %s", s.ClientURL, s.FederationURL, s.ServerName, clientURL, fedURL, name)
	}
	if keys := signingKeys(t, s); !slices.Equal(keys, keysBefore) {
		t.Fatalf("signing keys after restart %v, before %v", keys, keysBefore)
	}
	who, err := alice.Whoami(ctx)
	if err != nil || who.UserID != alice.UserID {
		t.Fatalf("whoami with the old token after restart = %v, %v; want %s", who, err, alice.UserID)
	}
	got, err := alice.GetDisplayName(ctx, alice.UserID)
	if err != nil || got.DisplayName != display {
		t.Fatalf("display name after restart = %v, %v; want %q", got, err, display)
	}
	rooms, err := alice.JoinedRooms(ctx)
	if err != nil || !slices.Contains(rooms.JoinedRooms, room.RoomID) {
		t.Fatalf("joined rooms after restart = %v, %v; want %s among them", rooms, err, room.RoomID)
	}

	renamed := "Alice " + randomHex(4)
	if err := alice.SetDisplayName(ctx, renamed); err != nil {
		t.Fatalf("rename after restart: %v", err)
	}
	if got, err := alice.GetDisplayName(ctx, alice.UserID); err != nil || got.DisplayName != renamed {
		t.Fatalf("display name after a rename past restart = %v, %v; want %q", got, err, renamed)
	}
	bob := s.Register(t, "bob"+randomHex(3), "pw-"+randomHex(8))
	if _, err := bob.Whoami(ctx); err != nil {
		t.Fatalf("a user registered after restart: whoami: %v", err)
	}
}

// signingKeys returns the signing keys, as sorted "key ID=public key"
// strings, that the peer's federation listener publishes at
// /_matrix/key/v2/server.
func signingKeys(t *testing.T, s *Server) []string {
	t.Helper()
	hc := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(s.FederationURL + "/_matrix/key/v2/server")
	if err != nil {
		t.Fatalf("fetch server keys: %v", err)
	}
	defer resp.Body.Close()
	var keys struct {
		ServerName string `json:"server_name"`
		VerifyKeys map[string]struct {
			Key string `json:"key"`
		} `json:"verify_keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&keys); err != nil {
		t.Fatalf("decode server keys: %v", err)
	}
	if keys.ServerName != s.ServerName || len(keys.VerifyKeys) == 0 {
		t.Fatalf("server keys name %q with %d keys, want %q with some", keys.ServerName, len(keys.VerifyKeys), s.ServerName)
	}
	var out []string
	for keyID, key := range keys.VerifyKeys {
		out = append(out, keyID+"="+key.Key)
	}
	slices.Sort(out)
	return out
}

// TestRestartReportsAPeerThatCannotStart takes the peer's client port while
// it is stopped: Restart returns an error and leaves nothing running, and
// once the port is free again Restart brings the peer back.
func TestRestartReportsAPeerThatCannotStart(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	s.Stop()
	taken, err := net.Listen("tcp", strings.TrimPrefix(s.ClientURL, "http://"))
	if err != nil {
		t.Fatalf("take the client port: %v", err)
	}
	if err := s.Restart(); err == nil {
		t.Fatal("Restart returned no error with the client port taken")
	}
	s.mu.Lock()
	running := s.proc != nil
	s.mu.Unlock()
	if running {
		t.Fatal("a failed Restart left a process behind")
	}
	_ = taken.Close()
	if err := s.Restart(); err != nil {
		t.Fatalf("Restart with the port free again: %v", err)
	}
	resp, err := http.Get(s.ClientURL + "/_matrix/client/versions")
	if err != nil {
		t.Fatalf("versions after restart: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("versions after restart: %s", resp.Status)
	}
}
