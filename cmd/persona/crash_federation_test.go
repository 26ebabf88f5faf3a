package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"persona/internal/testnode"
)

// txnProxy stands between a server and the federation listener of another
// (target): it forwards every request and records each transaction it
// carries. A transaction that arrives while it holds is forwarded, and its
// answer kept
// from the sender until the sender goes away.
type txnProxy struct {
	*httptest.Server
	target string
	client *http.Client
	hold   atomic.Bool
	held   chan string // the txnId of each transaction whose answer was kept

	mu   sync.Mutex
	txns []sentTxn
}

// sentTxn is one transaction as the proxy carried it.
type sentTxn struct {
	id   string
	pdus json.RawMessage
	ts   int64
}

func startTxnProxy(t *testing.T, target string) *txnProxy {
	p := &txnProxy{target: target, held: make(chan string, 16), client: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	}}
	p.Server = httptest.NewTLSServer(p)
	t.Cleanup(p.Close)
	return p
}

func (p *txnProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Whether to hold is decided as the request arrives: a transaction
	// under way when holding begins (its effect on the target visible
	// before its answer reaches the sender) still gets its answer.
	holding := p.hold.Load()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	// The target finishes a request even if the sender dies meanwhile.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 30*time.Second)
	defer cancel()
	out, err := http.NewRequestWithContext(ctx, r.Method, "https://"+p.target+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out.Header = r.Header.Clone()
	resp, err := p.client.Do(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if txn, ok := strings.CutPrefix(r.URL.Path, "/_matrix/federation/v1/send/"); ok && r.Method == http.MethodPut {
		var t struct {
			PDUs json.RawMessage `json:"pdus"`
			TS   int64           `json:"origin_server_ts"`
		}
		_ = json.Unmarshal(body, &t)
		p.mu.Lock()
		p.txns = append(p.txns, sentTxn{txn, t.PDUs, t.TS})
		p.mu.Unlock()
		var pdus []json.RawMessage
		_ = json.Unmarshal(t.PDUs, &pdus)
		if holding && len(pdus) > 0 { // a transaction of EDUs alone (profile updates) passes
			p.held <- txn
			<-r.Context().Done()
			return
		}
	}
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(answer)
}

// sent returns the transactions carried so far, in order.
func (p *txnProxy) sent() []sentTxn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.txns)
}

// eventually polls cond every 20 ms until it holds or limit passes.
func eventually(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSIGKILLMidTransaction runs server A as a child process and server B
// in this one, behind a proxy that records A's transactions to B. A user of
// each shares a room of A's. A's user renames; B applies the transaction,
// and the proxy keeps B's answer from A; A is SIGKILLed with the
// transaction in flight and started again on its data: it sends the same
// txnId with the same PDUs, B answers it from its record, and B's room
// holds each rename once, in order.
func TestSIGKILLMidTransaction(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: starts a node twice")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	keepAlive(t)

	addrs := freeLoopbackAddrs(t, 3)
	b := testnode.Start(t, "", testnode.ByAddress(t))
	proxy := startTxnProxy(t, b.FederationAddr())

	nameA := addrs[2]
	cfgPath := filepath.Join(t.TempDir(), "persona.yaml")
	cfg := fmt.Sprintf(`server_name: %q
data_dir: %q
listen:
  client: %q
  metrics: %q
  federation: %q
federation:
  insecure_skip_verify: true
  destinations: {%q: %q}
  outbox_backoff_min: 50ms
  outbox_backoff_max: 200ms
registration:
  shared_secret: %q
`, nameA, filepath.Join(t.TempDir(), "data"), addrs[0], addrs[1], nameA, b.Config.ServerName, proxy.URL, crashSecret)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	base := "http://" + addrs[0]
	node := startCrashChild(t, cfgPath, base)

	reg, err := registerWithSecret(base, crashSecret, "alice", "", true) // an admin: no rate limit
	if err != nil {
		t.Fatalf("register: %v\n%s", err, node.out.tail())
	}
	alice, err := mautrix.NewClient(base, id.UserID(reg.UserID), reg.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	bob := b.Register("bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatalf("createRoom: %v\n%s", err, node.out.tail())
	}
	room := created.RoomID
	if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{nameA}}); err != nil {
		t.Fatalf("bob joins through B: %v\n%s", err, node.out.tail())
	}
	nameOnB := func() string {
		var c event.MemberEventContent
		if err := bob.StateEvent(ctx, room, event.StateMember, string(alice.UserID), &c); err != nil {
			return ""
		}
		return c.Displayname
	}
	rename := func(name string) {
		t.Helper()
		if err := alice.SetDisplayName(ctx, name); err != nil {
			t.Fatalf("rename to %s: %v\n%s", name, err, node.out.tail())
		}
	}

	// A transaction through the proxy, answered.
	rename("Alice 1")
	eventually(t, 20*time.Second, "B to take the first rename", func() bool { return nameOnB() == "Alice 1" })

	// The next one B applies, but A never hears back before it dies.
	proxy.hold.Store(true)
	rename("Alice 2")
	var held string
	select {
	case held = <-proxy.held:
	case <-time.After(20 * time.Second):
		t.Fatalf("no transaction reached B through the proxy\n%s", node.out.tail())
	}
	eventually(t, 20*time.Second, "B to apply the held transaction", func() bool { return nameOnB() == "Alice 2" })
	node.kill()
	proxy.hold.Store(false)

	node = startCrashChild(t, cfgPath, base)
	eventually(t, 20*time.Second, "A to send the held transaction again", func() bool {
		return len(slices.DeleteFunc(proxy.sent(), func(s sentTxn) bool { return s.id != held })) >= 2
	})
	var sends []sentTxn
	for _, s := range proxy.sent() {
		if s.id == held {
			sends = append(sends, s)
		}
	}
	if !bytes.Equal(sends[0].pdus, sends[1].pdus) || sends[0].ts != sends[1].ts {
		t.Fatalf("txn %s sent again with other content:\n%s at %d\n%s at %d", held, sends[0].pdus, sends[0].ts, sends[1].pdus, sends[1].ts)
	}
	var pdus []json.RawMessage
	if err := json.Unmarshal(sends[0].pdus, &pdus); err != nil || len(pdus) == 0 {
		t.Fatalf("txn %s carries no PDU: %s", held, sends[0].pdus)
	}
	eventually(t, 20*time.Second, "B to answer the resend from its record", func() bool {
		n, err := metricValue(b.MetricsAddr(), `persona_federation_transactions_received_total{result="duplicate"}`)
		return err == nil && n >= 1
	})

	// A goes on with new transactions.
	rename("Alice 3")
	eventually(t, 20*time.Second, "B to take a rename after A's restart", func() bool { return nameOnB() == "Alice 3" })
	names, err := testnode.MemberNames(ctx, bob, room, alice.UserID)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"Alice 1", "Alice 2", "Alice 3"}; !slices.Equal(names, want) {
		t.Fatalf("B's timeline of alice's member events: %q, want %q (each once, in order)", names, want)
	}
	var ids []string
	for _, s := range proxy.sent() {
		ids = append(ids, s.id)
	}
	t.Logf("transactions A sent B: %s", strings.Join(ids, ", "))
}
