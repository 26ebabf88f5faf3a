package lincheck

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"maunium.net/go/mautrix"

	"persona/config"
	"persona/internal/testnode"
)

// step is one operation of a scripted history: a client's write or read
// of a user's name, from call to ret (in ticks, each a millisecond after
// the history's start).
type step struct {
	client    int
	user      string
	write     bool
	value     string
	outcome   Outcome
	call, ret int
}

// replay builds a history from steps, placed at their ticks.
func replay(initial map[string]string, steps []step) *History {
	h := New(initial)
	for _, s := range steps {
		call, ret := int64(s.call)*int64(time.Millisecond), int64(s.ret)*int64(time.Millisecond)
		h.mu.Lock()
		in := input{s.user, s.write, s.value}
		switch {
		case s.write && s.outcome == Refused:
		case s.write:
			if s.outcome == Unknown {
				h.open = append(h.open, len(h.ops))
			}
			h.ops = append(h.ops, opAt(s.client, in, "", call, ret))
		default:
			h.ops = append(h.ops, opAt(s.client, in, s.value, call, ret))
		}
		h.mu.Unlock()
	}
	return h
}

// TestCheckerTellsRegistersFromLosses: the model accepts what a register
// may do (a read overlapping a write sees either value; a write of unknown
// outcome may show up late or never) and refuses a lost acknowledged
// write, a read older than an acknowledged write, and a name that returns
// after a newer one was read.
func TestCheckerTellsRegistersFromLosses(t *testing.T) {
	t.Parallel()
	initial := map[string]string{"@a:x": "a0", "@b:x": "b0"}
	cases := []struct {
		name  string
		steps []step
		want  bool
	}{
		{"reads after an acked write see it", []step{
			{client: 1, user: "@a:x", write: true, value: "a1", call: 0, ret: 2},
			{client: 2, user: "@a:x", value: "a1", call: 3, ret: 4},
		}, true},
		{"a read overlapping the write sees the old name", []step{
			{client: 1, user: "@a:x", write: true, value: "a1", call: 0, ret: 5},
			{client: 2, user: "@a:x", value: "a0", call: 1, ret: 2},
		}, true},
		{"an unknown write shows up late", []step{
			{client: 1, user: "@a:x", write: true, value: "a1", outcome: Unknown, call: 0, ret: 1},
			{client: 2, user: "@a:x", value: "a0", call: 5, ret: 6},
			{client: 2, user: "@a:x", value: "a1", call: 7, ret: 8},
		}, true},
		{"a refused write never shows", []step{
			{client: 1, user: "@a:x", write: true, value: "a1", outcome: Refused, call: 0, ret: 1},
			{client: 2, user: "@a:x", value: "a0", call: 5, ret: 6},
		}, true},
		{"users are registers of their own", []step{
			{client: 1, user: "@a:x", write: true, value: "a1", call: 0, ret: 1},
			{client: 2, user: "@b:x", value: "b0", call: 2, ret: 3},
		}, true},
		{"an acked write lost", []step{
			{client: 1, user: "@a:x", write: true, value: "a1", call: 0, ret: 1},
			{client: 2, user: "@a:x", value: "a0", call: 2, ret: 3},
		}, false},
		{"a read older than the last acked write", []step{
			{client: 1, user: "@a:x", write: true, value: "a1", call: 0, ret: 1},
			{client: 1, user: "@a:x", write: true, value: "a2", call: 2, ret: 3},
			{client: 2, user: "@a:x", value: "a1", call: 4, ret: 5},
		}, false},
		{"a name that returns after a newer one was read", []step{
			{client: 1, user: "@a:x", write: true, value: "a1", outcome: Unknown, call: 0, ret: 1},
			{client: 2, user: "@a:x", value: "a1", call: 2, ret: 3},
			{client: 3, user: "@a:x", value: "a0", call: 4, ret: 5},
		}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			viz := filepath.Join(t.TempDir(), "history.html")
			res, err := replay(initial, c.steps).Check(10*time.Second, viz)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Decided || res.Linearizable != c.want {
				t.Fatalf("got %+v, want linearizable %v", res, c.want)
			}
			if !c.want && res.Visualization != viz {
				t.Fatalf("no drawing of a history that is not linearizable: %+v", res)
			}
		})
	}
}

// TestNodeProfilesAreLinearizable: clients writing and reading a few
// users' display names through one node, concurrently, leave a history
// that a register per user explains.
func TestNodeProfilesAreLinearizable(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", func(c *config.Config) { c.Profile.RateLimit.Burst = 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const users, clients, opsEach = 3, 8, 40
	owners := make([]*mautrix.Client, users)
	initial := map[string]string{}
	for i := range owners {
		owners[i] = n.Register("")
		name, err := owners[i].GetDisplayName(ctx, owners[i].UserID)
		if err != nil {
			t.Fatal(err)
		}
		initial[owners[i].UserID.String()] = name.DisplayName
	}
	h := New(initial)
	var acked atomic.Int64
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), 1))
			for i := range opsEach {
				owner := owners[rng.IntN(users)]
				cli := n.Client(owner)
				user := owner.UserID.String()
				if rng.IntN(2) == 0 {
					name := fmt.Sprintf("c%d-%d", c, i)
					end := h.Write(c, user, name)
					o := outcome(cli.SetDisplayName(ctx, name))
					if o == Acked {
						acked.Add(1)
					}
					end(o)
					continue
				}
				end := h.Read(c, user)
				got, err := cli.GetDisplayName(ctx, owner.UserID)
				if err != nil {
					end("", false)
					continue
				}
				end(got.DisplayName, true)
			}
		})
	}
	wg.Wait()
	res, err := h.Check(30*time.Second, filepath.Join(t.TempDir(), "history.html"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Operations < clients*opsEach*9/10 || acked.Load() < clients*opsEach/4 {
		t.Fatalf("only %d of %d operations recorded, %d writes acknowledged", res.Operations, clients*opsEach, acked.Load())
	}
	if !res.Decided || !res.Linearizable {
		t.Fatalf("profiles through one node are not linearizable: %+v", res)
	}
}

// outcome is what a client knows of a write from the error its request
// ended with: a Matrix 4xx refused it, anything else leaves it unknown.
func outcome(err error) Outcome {
	var httpErr mautrix.HTTPError
	switch {
	case err == nil:
		return Acked
	case errors.As(err, &httpErr) && httpErr.Response != nil &&
		httpErr.Response.StatusCode >= 400 && httpErr.Response.StatusCode < 500 && httpErr.Response.StatusCode != http.StatusRequestTimeout:
		return Refused
	default:
		return Unknown
	}
}

// opAt is a recorded operation at the given times.
func opAt(client int, in input, out string, call, ret int64) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret}
}
