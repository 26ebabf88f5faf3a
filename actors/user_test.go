package actors

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"persona/config"
	"persona/metrics"
	"persona/storage"
	"persona/wire"
)

// newTestHost opens a store in dir and a host on it whose actors passivate
// after passivate (0: the default).
func newTestHost(t testing.TB, dir string, passivate time.Duration) (*Service, *storage.Store) {
	t.Helper()
	cfg := config.Default()
	if passivate > 0 {
		cfg.Actors.PassivateAfter = passivate
	}
	return newHostWith(t, dir, cfg)
}

// newHostWith opens a store in dir and a host on it with cfg, for server.
func newHostWith(t testing.TB, dir string, cfg *config.Config) (*Service, *storage.Store) {
	t.Helper()
	return newHostOpts(t, dir, cfg, Options{})
}

// newHostOpts is newHostWith with the actors' options.
func newHostOpts(t testing.TB, dir string, cfg *config.Config, opts Options) (*Service, *storage.Store) {
	t.Helper()
	st, err := storage.Open(dir, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.ServerName = server
	h, err := NewWith(st, cfg, metrics.New(st), nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	return h, st
}

func ask[T proto.Message](t *testing.T, h *Service, id string, m proto.Message) T {
	t.Helper()
	return askKind[T](t, h, KindUser, id, m)
}

// askKind asks the actor kind/id and fails the test unless it answers a T.
func askKind[T proto.Message](t *testing.T, h *Service, kind, id string, m proto.Message) T {
	t.Helper()
	r, err := h.Request(context.Background(), kind, id, m)
	if err != nil {
		t.Fatalf("%T: %v", m, err)
	}
	out, ok := r.(T)
	if !ok {
		t.Fatalf("%T answered %T %v", m, r, r)
	}
	return out
}

func TestProfileWritesSurvivePassivationAndRestart(t *testing.T) {
	// Not parallel: under load its 50 ms idle timeout fires while the
	// actor takes a message, where protoactor's receive-timeout timer
	// races with the actor's goroutine (the race detector reports it).
	dir := t.TempDir()
	h, st := newTestHost(t, dir, 50*time.Millisecond)
	const u = "@alice:test"
	if r := ask[*wire.Done](t, h, u, &wire.Register{UserId: u, Displayname: "alice", Device: &wire.NewDevice{DeviceId: "D1", TokenHash: []byte("h1")}}); r.Error != nil {
		t.Fatal(r.Error)
	}
	if r := ask[*wire.Done](t, h, u, &wire.Register{UserId: u}); r.Error.GetKind() != wire.Error_CONFLICT || r.Error.GetSubject() != wire.Error_USER {
		t.Fatalf("second register: %v", r)
	}
	w := ask[*wire.WriteReply](t, h, u, &wire.SetProfileField{UserId: u, Key: "displayname", ValueJson: []byte(`"Alice"`)})
	if w.Error != nil || w.Version != 2 {
		t.Fatalf("set: %v", w)
	}
	eventually(t, "the user's actor passivated", func() bool {
		return actorMetric(t, h, "persona_actor_passivations_total", KindUser) >= 1
	})
	p := ask[*wire.ProfileReply](t, h, u, &wire.GetProfile{UserId: u})
	if string(p.FieldsJson) != `{"displayname":"Alice"}` || p.Version != 2 {
		t.Fatalf("after passivation: %s v%d", p.FieldsJson, p.Version)
	}
	if a := ask[*wire.AuthReply](t, h, u, &wire.Authenticate{UserId: u, TokenHash: []byte("h1")}); !a.Ok || a.DeviceId != "D1" {
		t.Fatalf("auth: %v", a)
	}
	h.Stop()
	st.Close()

	h, st = newTestHost(t, dir, time.Minute)
	defer st.Close()
	defer h.Stop()
	p = ask[*wire.ProfileReply](t, h, u, &wire.GetProfile{UserId: u})
	if string(p.FieldsJson) != `{"displayname":"Alice"}` {
		t.Fatalf("after restart: %s", p.FieldsJson)
	}
	ask[*wire.Done](t, h, u, &wire.RemoveDevices{UserId: u, All: true})
	if a := ask[*wire.AuthReply](t, h, u, &wire.Authenticate{UserId: u, TokenHash: []byte("h1")}); a.Ok {
		t.Fatal("token works after logout")
	}
}

func TestProfileTooLargeAndConcurrentWriters(t *testing.T) {
	t.Parallel()
	h, st := newTestHost(t, t.TempDir(), time.Minute)
	defer st.Close()
	defer h.Stop()
	const u = "@bob:test"
	ask[*wire.Done](t, h, u, &wire.Register{UserId: u})
	big, _ := json.Marshal(strings.Repeat("x", 40000))
	if w := ask[*wire.WriteReply](t, h, u, &wire.SetProfileField{UserId: u, Key: "a.one", ValueJson: big}); w.Error != nil {
		t.Fatal(w.Error)
	}
	if w := ask[*wire.WriteReply](t, h, u, &wire.SetProfileField{UserId: u, Key: "a.two", ValueJson: big}); w.Error.GetKind() != wire.Error_LIMIT_EXCEEDED || w.Error.GetSubject() != wire.Error_PROFILE {
		t.Fatalf("second big field: %v", w)
	}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, _ := json.Marshal(fmt.Sprint("name", i))
			if w := ask[*wire.WriteReply](t, h, u, &wire.SetProfileField{UserId: u, Key: "displayname", ValueJson: v}); w.Error != nil {
				t.Error(w.Error)
			}
		}()
	}
	wg.Wait()
	p := ask[*wire.ProfileReply](t, h, u, &wire.GetProfile{UserId: u})
	if p.Version < 3 || p.Version > 22 {
		t.Fatalf("version %d after 20 writes", p.Version)
	}
}

func TestValidateKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		key, want string // want: the error's kind and subject, "" for none
	}{
		{"displayname", ""}, {"avatar_url", ""}, {"m.tz", ""}, {"com.example-x_1", ""},
		{"Caps", "BAD_VALUE KEY"}, {"1abc", "BAD_VALUE KEY"}, {"", "BAD_VALUE KEY"},
		{"a" + string(make([]byte, 255)), "LIMIT_EXCEEDED KEY"},
	} {
		got := ""
		if e := ValidateKey(tc.key); e != nil {
			got = e.Kind.String() + " " + e.Subject.String()
		}
		if got != tc.want {
			t.Errorf("ValidateKey(%.20q) = %q, want %q", tc.key, got, tc.want)
		}
	}
}
