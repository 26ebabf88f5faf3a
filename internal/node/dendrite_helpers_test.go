package node_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"persona/config"
	"persona/internal/dendrite"
	"persona/internal/testnode"
)

// Helpers of the tests against a real Dendrite (dendrite_test.go).

// startFederating starts a persona node named after its federation
// listener, with no profile rate limit.
func startFederating(t *testing.T) *testnode.Node {
	t.Helper()
	return testnode.Start(t, "", func(c *config.Config) {
		byAddress(t)(c)
		c.Profile.RateLimit.Burst = 0
	})
}

// joinThrough joins cli to a room id or alias, naming servers both as
// server_name (what Dendrite reads) and via (what the spec now names).
func joinThrough(ctx context.Context, cli *mautrix.Client, roomOrAlias string, servers ...string) (id.RoomID, error) {
	u := cli.BuildURLWithFullQuery(mautrix.ClientURLPath{"v3", "join", roomOrAlias}, func(q url.Values) {
		if len(servers) > 0 {
			q["server_name"], q["via"] = servers, servers
		}
	})
	var resp mautrix.RespJoinRoom
	if _, err := cli.MakeRequest(ctx, http.MethodPost, u, struct{}{}, &resp); err != nil {
		return "", fmt.Errorf("%s joins %s through %v: %w", cli.UserID, roomOrAlias, servers, err)
	}
	return resp.RoomID, nil
}

// memberStep is one member event as the tests compare them across servers.
type memberStep struct {
	Membership, Displayname, Avatar string
}

func (s memberStep) String() string {
	return fmt.Sprintf("%s %q %q", s.Membership, s.Displayname, s.Avatar)
}

// memberSteps reads, as reader, the whole timeline of room back to its
// start and returns user's member events in it, oldest first, with their
// event ids.
func memberSteps(ctx context.Context, reader *mautrix.Client, room id.RoomID, user id.UserID) ([]memberStep, []id.EventID, error) {
	var steps []memberStep
	var ids []id.EventID
	from := ""
	for range 100 {
		resp, err := reader.Messages(ctx, room, from, "", mautrix.DirectionBackward, nil, 100)
		if err != nil {
			return nil, nil, fmt.Errorf("%s reads the messages of %s: %w", reader.UserID, room, err)
		}
		for _, ev := range resp.Chunk {
			if ev.Type != event.StateMember || ev.GetStateKey() != user.String() {
				continue
			}
			c := ev.Content.Raw
			str := func(k string) string { s, _ := c[k].(string); return s }
			steps = append(steps, memberStep{str("membership"), str("displayname"), str("avatar_url")})
			ids = append(ids, ev.ID)
		}
		if len(resp.Chunk) == 0 || resp.End == "" || resp.End == from {
			slices.Reverse(steps)
			slices.Reverse(ids)
			return steps, ids, nil
		}
		from = resp.End
	}
	return nil, nil, fmt.Errorf("%s: the timeline of %s has no start", reader.UserID, room)
}

// endsWith reports whether got ends with want.
func endsWith(got, want []memberStep) bool {
	return len(got) >= len(want) && slices.Equal(got[len(got)-len(want):], want)
}

// currentMember is user's member event in room as reader reads the
// room's state.
func currentMember(ctx context.Context, reader *mautrix.Client, room id.RoomID, user id.UserID) (memberStep, error) {
	var c map[string]any
	if err := reader.StateEvent(ctx, room, event.StateMember, user.String(), &c); err != nil {
		return memberStep{}, err
	}
	str := func(k string) string { s, _ := c[k].(string); return s }
	return memberStep{str("membership"), str("displayname"), str("avatar_url")}, nil
}

// waitMember waits until reader reads want as user's member event in room,
// for at most a minute.
func waitMember(ctx context.Context, t *testing.T, reader *mautrix.Client, room id.RoomID, user id.UserID, want memberStep) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		got, err := currentMember(ctx, reader, room, user)
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s reads %s in %s as %v (%v), want %v", reader.UserID, user, room, got, err, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// setNick sends cli's own member event in room with nick as its
// displayname, the rest of its content kept.
func setNick(ctx context.Context, cli *mautrix.Client, room id.RoomID, nick string) error {
	var c map[string]any
	if err := cli.StateEvent(ctx, room, event.StateMember, cli.UserID.String(), &c); err != nil {
		return fmt.Errorf("read own member event in %s: %w", room, err)
	}
	c["displayname"] = nick
	if _, err := cli.SendStateEvent(ctx, room, event.StateMember, cli.UserID.String(), c); err != nil {
		return fmt.Errorf("set a per-room name in %s: %w", room, err)
	}
	return nil
}

// randomHex is n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// waitMembership waits until reader reads user's membership in room as
// want, for at most a minute.
func waitMembership(ctx context.Context, t *testing.T, reader *mautrix.Client, room id.RoomID, user id.UserID, want string) {
	t.Helper()
	waitFor(t, time.Minute, fmt.Sprintf("%s to read %s's membership in %s as %s", reader.UserID, user, room, want), func() bool {
		m, err := currentMember(ctx, reader, room, user)
		return err == nil && m.Membership == want
	})
}

// waitAvatar waits until reader reads user's avatar in room as want, for
// at most a minute.
func waitAvatar(ctx context.Context, t *testing.T, reader *mautrix.Client, room id.RoomID, user id.UserID, want id.ContentURI) {
	t.Helper()
	waitFor(t, time.Minute, fmt.Sprintf("%s to read %s's avatar in %s as %s", reader.UserID, user, room, want), func() bool {
		m, err := currentMember(ctx, reader, room, user)
		return err == nil && m.Avatar == want.String()
	})
}

// signingAs is a federation client that signs its requests with the
// Dendrite's own key, from the matrix_key.pem in its folder.
func signingAs(t *testing.T, d *dendrite.Server) fclient.FederationClient {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(d.Dir, "matrix_key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(raw)
	if block == nil || block.Type != "MATRIX PRIVATE KEY" || len(block.Bytes) != ed25519.SeedSize {
		t.Fatalf("%s/matrix_key.pem holds no Matrix signing key", d.Dir)
	}
	identity := &fclient.SigningIdentity{ServerName: spec.ServerName(d.ServerName),
		KeyID: gomatrixserverlib.KeyID(block.Headers["Key-ID"]), PrivateKey: ed25519.NewKeyFromSeed(block.Bytes)}
	return fclient.NewFederationClient([]*fclient.SigningIdentity{identity}, fclient.WithSkipVerify(true), fclient.WithTimeout(10*time.Second))
}

// holdsEvent reports whether server answers /event/{event} to origin
// (through cli, which signs as origin) with the event, or with 404.
func holdsEvent(ctx context.Context, t *testing.T, cli fclient.FederationClient, origin, server string, event id.EventID) bool {
	t.Helper()
	txn, err := cli.GetEvent(ctx, spec.ServerName(origin), spec.ServerName(server), string(event))
	var httpErr gomatrix.HTTPError
	switch {
	case errors.As(err, &httpErr) && httpErr.Code == http.StatusNotFound:
		return false
	case err != nil:
		t.Fatalf("%s asks %s for %s: %v", origin, server, event, err)
	case len(txn.PDUs) != 1:
		t.Fatalf("%s answers %s for %s with %d PDUs", server, origin, event, len(txn.PDUs))
	}
	return true
}

// scrape reads a node's /metrics: each sample's value by its name and
// labels as printed ("name" or "name{labels}").
func scrape(t *testing.T, n *testnode.Node) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + n.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for line := range strings.Lines(string(body)) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(line[i+1:]), 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// waitOutboxIdle waits until the node's outbox for dest holds nothing
// undelivered, for at most a minute.
func waitOutboxIdle(t *testing.T, n *testnode.Node, dest string) {
	t.Helper()
	waitFor(t, time.Minute, "the outbox of "+dest+" to empty", func() bool {
		return scrape(t, n)[`persona_federation_outbox_queued{destination="`+dest+`"}`] == 0
	})
}
