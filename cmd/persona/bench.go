package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"persona/internal/node"
)

func benchCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: persona bench profile|propagation|federation [flags]")
		return errors.New("bench: which benchmark?")
	}
	switch args[0] {
	case "profile":
		return benchProfile(args[1:], stdout, stderr)
	case "propagation":
		return benchPropagation(args[1:], stdout, stderr)
	case "federation":
		return benchFederation(args[1:], stdout, stderr)
	default:
		return fmt.Errorf("bench: unknown benchmark %q", args[0])
	}
}

// benchProfile loads a running node, or the nodes of a cluster, with
// profile writes, then reads, from many concurrent clients, and prints
// throughput, latency and the nodes' CPU per operation.
func benchProfile(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench profile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config of the node (for its address and shared secret)")
	urls := fs.String("url", "", "base URL of the node, or of several nodes separated by commas: each user is written and read through one of them in turn (default: from listen.client)")
	metricsList := fs.String("metrics", "", "host:port of the metrics listener of every node whose CPU counts, separated by commas (default: listen.metrics)")
	users := fs.Int("users", 200, "users to register and write to")
	conc := fs.Int("concurrency", 64, "concurrent clients")
	dur := fs.Duration("duration", 10*time.Second, "length of each phase")
	phases := fs.String("phases", "writes,reads", "phases to run, in order: writes, reads")
	rate := fs.Float64("rate", 0, "target operations per second in all (0: as fast as the node answers)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *users < 1 || *conc < 1 || *dur <= 0 {
		return errors.New("bench: --users, --concurrency and --duration must be positive")
	}
	cfg, err := loadConfig(*path, stderr)
	if err != nil {
		return err
	}
	secret, err := node.SharedSecret(cfg)
	if err != nil {
		return err
	}
	bases := splitList(*urls)
	if len(bases) == 0 {
		bases = []string{"http://" + cfg.Listen.Client}
	}
	metrics := splitList(*metricsList)
	if len(metrics) == 0 && cfg.Listen.Metrics != "" {
		metrics = []string{cfg.Listen.Metrics}
	}
	widenClient(*conc * 2)
	base := func(i int) string { return bases[i%len(bases)] }

	// Bench users are admins: admins are exempt from the profile rate limit.
	tokens, ids, err := benchUsers(base, secret, *users, *conc, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "persona bench profile: %d users, %d clients, %s per phase, %s\n", *users, *conc, *dur, strings.Join(bases, ", "))
	var seq atomic.Int64
	write := func(i int) error {
		body := map[string]string{"displayname": fmt.Sprintf("bench %d", seq.Add(1))}
		return call(http.MethodPut, base(i)+"/_matrix/client/v3/profile/"+url.PathEscape(ids[i])+"/displayname", tokens[i], body, nil)
	}
	read := func(i int) error {
		return call(http.MethodGet, base(i)+"/_matrix/client/v3/profile/"+url.PathEscape(ids[i]), "", nil, nil)
	}
	ops := map[string]func(int) error{"writes": write, "reads": read}
	idle, err := idleCPU(metrics, 2*time.Second)
	if err != nil {
		return err
	}
	if len(metrics) > 0 {
		fmt.Fprintf(stdout, "nodes' CPU idle: %.3f cores (%d nodes)\n", idle, len(metrics))
	}
	for _, phase := range strings.Split(*phases, ",") {
		op, ok := ops[phase]
		if !ok {
			return fmt.Errorf("bench: unknown phase %q", phase)
		}
		cpu, err := startCPU(metrics)
		if err != nil {
			return err
		}
		r := load(phase, *conc, *dur, *rate, len(ids), op, stderr)
		fmt.Fprintf(stdout, "%-6s %9.0f/s  p50 %6.2f ms  p99 %6.2f ms  (%d ok, %d errors)\n",
			phase, r.perSecond, ms(r.p50), ms(r.p99), r.ok, r.errors)
		if per, sum, elapsed, err := cpu.since(); err == nil && len(metrics) > 0 {
			fmt.Fprintf(stdout, "       nodes' CPU: %s; less idle: %s\n", cpuFigure(per, sum, 0, ""),
				cpuFigure(nil, sum-idle*elapsed.Seconds(), r.ok, strings.TrimSuffix(phase, "s")))
		}
		if r.firstErr != nil {
			fmt.Fprintf(stdout, "       first error: %v\n", r.firstErr)
		}
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// percentile is the nearest-rank p-th percentile of sorted, a non-empty
// ascending list: the smallest value that at least p% of the list does not
// exceed. Of 100 values the 99th is the second largest, not the largest.
func percentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// benchUsers registers n users through the shared secret, conc at a time,
// user i through the node at base(i).
func benchUsers(base func(int) string, secret string, n, conc int, stderr io.Writer) (tokens, ids []string, err error) {
	tokens, ids = make([]string, n), make([]string, n)
	run := fmt.Sprintf("bench%x", rand.Uint32())
	p := newProgress(stderr, "registering users", n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	next := atomic.Int64{}
	for w := 0; w < min(conc, 16); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				r, e := registerWithSecret(base(i), secret, fmt.Sprintf("%s_%d", run, i), "", true)
				if e != nil {
					mu.Lock()
					err = e
					mu.Unlock()
					return
				}
				tokens[i], ids[i] = r.AccessToken, r.UserID
				p.add(1)
			}
		}()
	}
	wg.Wait()
	p.finish()
	return tokens, ids, err
}

type loadResult struct {
	perSecond  float64
	p50, p99   time.Duration
	ok, errors int
	firstErr   error
}

// load runs op from conc workers for d, on random users, and measures it.
// With rate > 0 the workers pace themselves to rate operations a second in all.
func load(name string, conc int, d time.Duration, rate float64, users int, op func(int) error, stderr io.Writer) loadResult {
	deadline := time.Now().Add(d)
	lat := make([][]time.Duration, conc)
	var errs atomic.Int64
	var firstErr atomic.Value
	p := newProgress(stderr, name, int(d/time.Second))
	stop := make(chan struct{})
	go func() { // the bar shows seconds elapsed
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				p.add(1)
			}
		}
	}()
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var every time.Duration
			if rate > 0 {
				every = time.Duration(float64(conc) / rate * float64(time.Second))
			}
			next := time.Now().Add(time.Duration(rand.Int64N(int64(every) + 1)))
			for time.Now().Before(deadline) {
				if every > 0 {
					time.Sleep(time.Until(next))
					next = next.Add(every)
				}
				t := time.Now()
				if err := op(rand.IntN(users)); err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				lat[w] = append(lat[w], time.Since(t))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	p.finish()
	all := slices.Concat(lat...)
	slices.Sort(all)
	r := loadResult{ok: len(all), errors: int(errs.Load())}
	if e, ok := firstErr.Load().(error); ok {
		r.firstErr = errors.New(strings.TrimSpace(e.Error()))
	}
	if len(all) > 0 {
		r.perSecond = float64(len(all)) / elapsed.Seconds()
		r.p50, r.p99 = percentile(all, 50), percentile(all, 99)
	}
	return r
}
