package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"persona/config"
	"persona/internal/cputime"
	"persona/internal/node"
)

// benchFederation starts servers in this process, on loopback, each named
// after its federation listener, and measures what federation adds to a
// rename: a user of the first server in --rooms rooms, every one shared
// with a user of each of --servers other servers, renames; the time until
// every other server holds the new name in every room, and from it the
// PDUs per second each destination took. A rename counts as applied on a
// server once its rooms have accepted (and made durable) its --rooms PDUs;
// a /sync of each server's user then checks, untimed, that every room
// shows the new name.
func benchFederation(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench federation", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rooms := fs.Int("rooms", 1000, "rooms the renaming user shares with every other server")
	servers := fs.Int("servers", 3, "other servers in every room")
	renames := fs.Int("renames", 3, "renames to time, one after the other")
	dir := fs.String("dir", "", "data directory of the servers (default: a temporary one, removed after)")
	profile := fs.String("cpuprofile", "", "write a CPU profile of the renames (all servers: they run in this process) to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rooms < 1 || *servers < 1 || *renames < 1 {
		return errors.New("bench: --rooms, --servers and --renames must be positive")
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "persona-bench-federation-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	nodes := make([]*node.Node, *servers+1)
	for i := range nodes {
		n, err := startBenchServer(filepath.Join(*dir, fmt.Sprint(i)))
		if err != nil {
			return err
		}
		defer func() { _ = n.Stop(context.Background()) }()
		nodes[i] = n
	}
	base := func(n *node.Node) string { return "http://" + n.ClientAddr() }
	httpClient.Transport = &http.Transport{MaxIdleConns: 64, MaxIdleConnsPerHost: 16}
	var tokens, ids []string
	for _, n := range nodes {
		t, id, err := benchUsers(func(int) string { return base(n) }, benchSecret, 1, 1, io.Discard)
		if err != nil {
			return err
		}
		tokens, ids = append(tokens, t[0]), append(ids, id[0])
	}
	fmt.Fprintf(stdout, "persona bench federation: %s in %d rooms, each shared with a user of %d other servers\n", ids[0], *rooms, *servers)
	roomIDs, err := createSharedRooms(base(nodes[0]), tokens[0], *rooms, stderr)
	if err != nil {
		return err
	}
	origin := nodes[0].Federation().Identity().ServerName
	for i := 1; i < len(nodes); i++ {
		if err := joinAll(base(nodes[i]), tokens[i], roomIDs, string(origin), fmt.Sprintf("server %d joining", i), stderr); err != nil {
			return err
		}
	}
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	txns0, pdus0, secs0, err := outboxTotals(nodes[0].MetricsAddr())
	if err != nil {
		return err
	}
	for r := 1; r <= *renames; r++ {
		name := fmt.Sprintf("federated %d", r)
		since := make([]string, len(nodes))
		for i := 1; i < len(nodes); i++ {
			if since[i], err = syncToken(base(nodes[i]), tokens[i]); err != nil {
				return err
			}
		}
		accepted := make([]float64, len(nodes))
		for i, n := range nodes {
			accepted[i] = n.Metrics().FederationPDUsAccepted()
		}
		start, cpu0 := time.Now(), cputime.Process()
		if err := call(http.MethodPut, base(nodes[0])+"/_matrix/client/v3/profile/"+neturl.PathEscape(ids[0])+"/displayname", tokens[0], map[string]string{"displayname": name}, nil); err != nil {
			return err
		}
		if err := waitAccepted(nodes[1:], accepted[1:], *rooms, 2*time.Minute); err != nil {
			return err
		}
		last, cpu := time.Since(start), cputime.Process()-cpu0
		var wg sync.WaitGroup
		var failed atomic.Value
		for i := 1; i < len(nodes); i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := waitRenamed(base(nodes[i]), tokens[i], since[i], ids[0], name, *rooms, time.Now(), time.Minute); err != nil {
					failed.Store(err)
				}
			}()
		}
		wg.Wait()
		if err, _ := failed.Load().(error); err != nil {
			return err
		}
		txns, pdus, secs, err := outboxTotals(nodes[0].MetricsAddr())
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "rename %d: applied on all %d servers in %.0f ms, %.2f s of CPU (%d PDUs each, %.0f PDUs/s per destination); %d transactions, %.1f PDUs and %.1f ms each\n",
			r, *servers, ms(last), cpu.Seconds(), *rooms, float64(*rooms)/last.Seconds(), txns-txns0, (pdus-pdus0)/float64(max(1, txns-txns0)), 1000*(secs-secs0)/float64(max(1, txns-txns0)))
		txns0, pdus0, secs0 = txns, pdus, secs
	}
	return nil
}

// benchSecret is the registration secret of the bench's servers.
const benchSecret = "bench-federation"

// startBenchServer starts a server whose data is in dir, named after its
// federation listener, trusting its peers' self-signed certificates.
func startBenchServer(dir string) (*node.Node, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	_ = l.Close()
	cfg := config.Default()
	cfg.DataDir, cfg.ServerName = dir, addr
	cfg.Listen.Client, cfg.Listen.Federation, cfg.Listen.Metrics = "127.0.0.1:0", addr, "127.0.0.1:0"
	cfg.Registration.SharedSecret = benchSecret
	cfg.Profile.RateLimit.Burst = 0
	cfg.Federation.InsecureSkipVerify = true
	return node.Start(cfg, slog.New(slog.DiscardHandler))
}

// createSharedRooms creates n public rooms and returns their ids.
func createSharedRooms(base, token string, n int, stderr io.Writer) ([]string, error) {
	p := newProgress(stderr, "creating rooms", n)
	defer p.finish()
	ids := make([]string, n)
	err := parallel(n, 8, func(i int) error {
		var out struct {
			RoomID string `json:"room_id"`
		}
		err := call(http.MethodPost, base+"/_matrix/client/v3/createRoom", token, map[string]any{"preset": "public_chat"}, &out)
		ids[i] = out.RoomID
		p.add(1)
		return err
	})
	return ids, err
}

// joinAll joins every room through server.
func joinAll(base, token string, rooms []string, server, label string, stderr io.Writer) error {
	p := newProgress(stderr, label, len(rooms))
	defer p.finish()
	return parallel(len(rooms), 8, func(i int) error {
		err := call(http.MethodPost, base+"/_matrix/client/v3/join/"+neturl.PathEscape(rooms[i])+"?server_name="+neturl.QueryEscape(server), token, map[string]any{}, nil)
		p.add(1)
		return err
	})
}

// parallel runs fn(0..n-1), conc at a time, and returns the first error.
func parallel(n, conc int, fn func(int) error) error {
	var next atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n && first.Load() == nil; i = int(next.Add(1)) - 1 {
				if err := fn(i); err != nil {
					first.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	wg.Wait()
	err, _ := first.Load().(error)
	return err
}

// syncToken is a sync's next_batch, to sync from.
func syncToken(base, token string) (string, error) {
	var out struct {
		NextBatch string `json:"next_batch"`
	}
	err := call(http.MethodGet, base+"/_matrix/client/v3/sync?timeout=0&filter="+neturl.QueryEscape(`{"room":{"timeline":{"limit":0}}}`), token, nil, &out)
	return out.NextBatch, err
}

// waitAccepted waits until the rooms of every one of nodes have accepted n
// PDUs more than before[i]. It reads the nodes' counters in process, every
// 2 ms: a read costs the servers nothing they measure.
func waitAccepted(nodes []*node.Node, before []float64, n int, limit time.Duration) error {
	start := time.Now()
	done := make([]bool, len(nodes))
	for left := len(nodes); left > 0; time.Sleep(2 * time.Millisecond) {
		if time.Since(start) > limit {
			return fmt.Errorf("bench: a server accepted fewer than %d PDUs in %s", n, limit)
		}
		for i, nd := range nodes {
			if !done[i] && nd.Metrics().FederationPDUsAccepted() >= before[i]+float64(n) {
				done[i], left = true, left-1
			}
		}
	}
	return nil
}

// waitRenamed syncs from since until user's member event with name has
// arrived in n rooms: what a client of the server sees once its rooms have
// accepted the rename.
func waitRenamed(base, token, since, user, name string, n int, start time.Time, limit time.Duration) error {
	seen := map[string]bool{}
	filter := neturl.QueryEscape(`{"room":{"timeline":{"types":["m.room.member"],"limit":50},"state":{"types":[]}},"presence":{"types":[]}}`)
	for len(seen) < n {
		if time.Since(start) > limit {
			return fmt.Errorf("bench: %s has the new name in %d of %d rooms after %s", base, len(seen), n, limit)
		}
		var out struct {
			NextBatch string `json:"next_batch"`
			Rooms     struct {
				Join map[string]struct {
					Timeline struct {
						Events []struct {
							StateKey string `json:"state_key"`
							Content  struct {
								Displayname string `json:"displayname"`
							} `json:"content"`
						} `json:"events"`
					} `json:"timeline"`
				} `json:"join"`
			} `json:"rooms"`
		}
		if err := call(http.MethodGet, base+"/_matrix/client/v3/sync?timeout=1000&since="+neturl.QueryEscape(since)+"&filter="+filter, token, nil, &out); err != nil {
			return err
		}
		for room, r := range out.Rooms.Join {
			for _, ev := range r.Timeline.Events {
				if ev.StateKey == user && ev.Content.Displayname == name {
					seen[room] = true
				}
			}
		}
		since = out.NextBatch
		if len(seen) < n {
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// outboxTotals reads a node's transactions delivered, the PDUs they
// carried and the seconds they took, from its /metrics.
func outboxTotals(metricsAddr string) (txns int, pdus, secs float64, err error) {
	body, err := scrape(metricsAddr)
	if err != nil {
		return 0, 0, 0, err
	}
	for _, line := range strings.Split(body, "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, _ := strconv.ParseFloat(value, 64)
		switch name {
		case "persona_federation_transactions_total":
			txns = int(v)
		case "persona_federation_transaction_pdus_sum":
			pdus = v
		case "persona_federation_transaction_seconds_sum":
			secs = v
		}
	}
	return txns, pdus, secs, nil
}
