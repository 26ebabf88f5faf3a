package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	neturl "net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"persona/api"
	"persona/internal/node"
)

// benchPropagation measures the fan-out of one rename: a user joined to N
// rooms renames itself; the time until every room has applied (and made
// durable) the new name, the PUT latency, and the nodes' CPU and memory.
func benchPropagation(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench propagation", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config of the node (for its addresses and shared secret)")
	base := fs.String("url", "", "base URL of the node (default: from listen.client)")
	rooms := fs.Int("rooms", 1000, "rooms the user is joined to")
	renames := fs.Int("renames", 5, "renames to time, one after another")
	burst := fs.Int("burst", 20, "renames sent back to back, to time PUT latency under fan-out")
	conc := fs.Int("concurrency", 16, "concurrent requests while creating rooms")
	pause := fs.Duration("pause", 0, "wait this long before each timed rename (longer than the node's actors.passivate_after: the rename finds its rooms passivated)")
	tracePath := fs.String("trace", "", "write a Go execution trace of the node during the burst to this file (needs listen.metrics), and report where its slowest profile writes waited")
	metricsList := fs.String("metrics", "", "host:port of the metrics listener of every node whose CPU and memory count, the node at --url first (default: listen.metrics)")
	where := fs.String("placement", "any", "in a cluster, where the user's rooms live: any node; local: partitions the node at --url leads, as it leads the user's; remote: partitions other nodes lead")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rooms < 1 || *renames < 1 || *conc < 1 {
		return errors.New("bench: --rooms, --renames and --concurrency must be positive")
	}
	cfg, err := loadConfig(*path, stderr)
	if err != nil {
		return err
	}
	secret, err := node.SharedSecret(cfg)
	if err != nil {
		return err
	}
	if *base == "" {
		*base = "http://" + cfg.Listen.Client
	}
	metrics := splitList(*metricsList)
	if len(metrics) == 0 && cfg.Listen.Metrics != "" {
		metrics = []string{cfg.Listen.Metrics}
	}
	if len(metrics) > 0 {
		cfg.Listen.Metrics = metrics[0]
	}
	widenClient(64)
	pl, err := newPlacement(*where, cfg.Cluster.Partitions, *base, secret)
	if err != nil {
		return err
	}
	run := fmt.Sprintf("prop%x", rand.Uint32())
	u, err := registerWithSecret(*base, secret, pl.userName(run, cfg.ServerName), "", true)
	if err != nil {
		return err
	}
	left, err := createRooms(*base, u.AccessToken, *rooms, *conc, pl.wants, stderr)
	if err != nil {
		return err
	}
	p := &propagationProbe{base: *base, secret: secret, user: u.UserID, token: u.AccessToken}
	if _, err := p.waitSettled(time.Now(), 5*time.Minute); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "persona bench propagation: %d rooms, %s\n", *rooms, *base)
	if pl.lead != nil {
		fmt.Fprintf(stdout, "the user's partition led by %s, its rooms' by %s (%d rooms created and left elsewhere)\n",
			pl.lead.self, map[string]string{"local": "the same node", "remote": "the others"}[*where], left)
	}
	idle, err := idleCPU(metrics, 2*time.Second)
	if err != nil {
		return err
	}
	cpu, err := startCPU(metrics)
	if err != nil {
		return err
	}
	leadersBefore, inCluster := leaderChanges(metrics)
	var prop, puts []time.Duration
	for i := 0; i < *renames; i++ {
		time.Sleep(*pause)
		start := time.Now()
		if err := p.rename(fmt.Sprintf("%s rename %d", run, i)); err != nil {
			return err
		}
		puts = append(puts, time.Since(start))
		d, err := p.waitSettled(start, 5*time.Minute)
		if err != nil {
			return err
		}
		prop = append(prop, d)
		fmt.Fprintf(stdout, "rename %d: PUT %6.2f ms, every room applied after %8.2f ms\n", i+1, ms(puts[i]), ms(d))
	}
	renamesCPU, renamesCPUSum, renamesWall, err := cpu.since()
	if err != nil {
		return err
	}
	// Meanwhile another user writes and reads its own profile: the big
	// fan-out must not delay it.
	other, err := registerWithSecret(*base, secret, run+"_other", "", true)
	if err != nil {
		return err
	}
	// The same PUTs with no fan-out running: this machine's floor, against
	// which the burst's figures read (a slow minute raises both).
	otherURL := *base + "/_matrix/client/v3/profile/" + neturl.PathEscape(other.UserID)
	var floor []time.Duration
	for i := range max(*burst, 100) {
		t := time.Now()
		if err := call(http.MethodPut, otherURL+"/displayname", other.AccessToken, map[string]string{"displayname": fmt.Sprint("floor ", i)}, nil); err != nil {
			return err
		}
		floor = append(floor, time.Since(t))
	}
	slices.Sort(floor)
	stopOther := make(chan struct{})
	otherDone := make(chan [3][]time.Duration)
	go func() { otherDone <- otherUser(otherURL, other.AccessToken, stopOther) }()
	before, _ := nodeHistograms(cfg.Listen.Metrics, putSeries, getSeries)
	traced := make(chan error, 1)
	if *tracePath != "" {
		go func() { traced <- fetchTrace(cfg.Listen.Metrics, *tracePath, 3*time.Second) }()
		time.Sleep(50 * time.Millisecond) // let the trace start
	} else {
		traced <- nil
	}
	start := time.Now()
	var burstPuts []time.Duration
	for i := 0; i < *burst; i++ {
		t := time.Now()
		if err := p.rename(fmt.Sprintf("%s burst %d", run, i)); err != nil {
			return err
		}
		burstPuts = append(burstPuts, time.Since(t))
	}
	settled, err := p.waitSettled(start, 5*time.Minute)
	close(stopOther)
	otherLat := <-otherDone
	if err != nil {
		return err
	}
	after, afterErr := nodeHistograms(cfg.Listen.Metrics, putSeries, getSeries)
	if err := <-traced; err != nil {
		return err
	}
	// The same requests for as long again, with no fan-out running: what
	// is left is the store's own work after the writes (badger flushing
	// and compacting them), which the fan-out's figures include.
	stopAfter := make(chan struct{})
	time.AfterFunc(settled, func() { close(stopAfter) })
	afterLat := otherUser(otherURL, other.AccessToken, stopAfter)
	last := fmt.Sprintf("%s burst %d", run, *burst-1)
	if *burst == 0 {
		last = fmt.Sprintf("%s rename %d", run, *renames-1)
	}
	checked, err := p.verify(last, 200)
	if err != nil {
		return err
	}
	slices.Sort(prop)
	slices.Sort(puts)
	slices.Sort(burstPuts)
	fmt.Fprintf(stdout, "propagation to %d rooms: p50 %.2f ms, max %.2f ms (%d renames)\n", *rooms, ms(percentile(prop, 50)), ms(prop[len(prop)-1]), len(prop))
	if len(metrics) > 0 {
		net := renamesCPUSum - idle*renamesWall.Seconds()
		fmt.Fprintf(stdout, "nodes' CPU idle: %.3f cores (%d nodes); during the %d renames: %s; less idle: %s\n", idle, len(metrics), len(prop),
			cpuFigure(renamesCPU, renamesCPUSum, 0, ""), cpuFigure(nil, net, len(prop)**rooms, "room update"))
	}
	fmt.Fprintf(stdout, "PUT latency, node idle: p50 %.2f ms, max %.2f ms (%d PUTs)\n", ms(percentile(puts, 50)), ms(puts[len(puts)-1]), len(puts))
	fmt.Fprintf(stdout, "PUT latency with no fan-out (another user, back to back): p50 %.2f ms, p99 %.2f ms (%d PUTs)\n",
		ms(percentile(floor, 50)), ms(percentile(floor, 99)), len(floor))
	if len(burstPuts) > 0 {
		fmt.Fprintf(stdout, "burst of %d renames: converged in %.2f ms; PUT latency during the fan-out: p50 %.2f ms, p99 %.2f ms\n",
			*burst, ms(settled), ms(percentile(burstPuts, 50)), ms(percentile(burstPuts, 99)))
	}
	if afterErr == nil && before != nil {
		if bound, n := after[0].p99Since(before[0]); n > 0 {
			fmt.Fprintf(stdout, "node's own histogram, PUTs of both users meanwhile: p99 <= %g ms (%d PUTs)\n", bound*1000, n)
		}
		if bound, n := after[1].p99Since(before[1]); n > 0 {
			fmt.Fprintf(stdout, "node's own histogram, the other user's GETs: p99 <= %g ms (%d GETs)\n", bound*1000, n)
		}
	}
	if len(otherLat[2]) > 0 {
		fmt.Fprintf(stdout, "another user meanwhile (PUT + GET of its own profile): p50 %.2f ms, p99 %.2f ms (%d pairs); its PUTs p99 %.2f ms, its GETs p99 %.2f ms\n",
			ms(percentile(otherLat[2], 50)), ms(percentile(otherLat[2], 99)), len(otherLat[2]), ms(percentile(otherLat[0], 99)), ms(percentile(otherLat[1], 99)))
	}
	if len(afterLat[2]) > 0 {
		fmt.Fprintf(stdout, "another user after the fan-out, as long again (no fan-out running): p50 %.2f ms, p99 %.2f ms (%d pairs); its PUTs p99 %.2f ms, its GETs p99 %.2f ms\n",
			ms(percentile(afterLat[2], 50)), ms(percentile(afterLat[2], 99)), len(afterLat[2]), ms(percentile(afterLat[0], 99)), ms(percentile(afterLat[1], 99)))
	}
	fmt.Fprintf(stdout, "verified the last name in %d rooms' state\n", checked)
	if p.unanswered > 0 {
		fmt.Fprintf(stdout, "%d probes of the pending rooms unanswered within %s, asked again\n", p.unanswered, probeTimeout)
	}
	for _, m := range metrics {
		if rss, err := nodeRSS(m); err == nil {
			fmt.Fprintf(stdout, "node RSS (%s): %.1f MiB\n", m, float64(rss)/(1<<20))
		}
	}
	if after, ok := leaderChanges(metrics); inCluster && ok && after > leadersBefore {
		fmt.Fprintf(stdout, "warning: the nodes learned of %.0f new partition leaders during the renames and the burst (elections or transfers)\n", after-leadersBefore)
	}
	if n, err := pl.moved(*base, secret); err != nil || n > 0 {
		fmt.Fprintf(stdout, "warning: %d partitions changed leader during the run (%v)\n", n, err)
	}
	if *tracePath != "" {
		return traceReport(*tracePath, stdout, 10)
	}
	return nil
}

// otherUser writes and then reads another user's profile at url, back to
// back, until stop is closed. It returns the PUTs', the GETs' and the
// pairs' latencies, sorted.
func otherUser(url, token string, stop <-chan struct{}) [3][]time.Duration {
	var lat [3][]time.Duration
	for i := 0; ; i++ {
		select {
		case <-stop:
			for _, l := range lat {
				slices.Sort(l)
			}
			return lat
		default:
		}
		t := time.Now()
		if err := call(http.MethodPut, url+"/displayname", token, map[string]string{"displayname": fmt.Sprint("other ", i)}, nil); err == nil {
			put := time.Now()
			if err := call(http.MethodGet, url, "", nil, nil); err == nil {
				lat[0], lat[1] = append(lat[0], put.Sub(t)), append(lat[1], time.Since(put))
				lat[2] = append(lat[2], time.Since(t))
			}
		}
	}
}

// createRooms creates rooms owned by the user, conc at a time, until n of
// them are rooms it wants; it leaves the others, and returns how many.
func createRooms(base, token string, n, conc int, wants func(roomID string) bool, stderr io.Writer) (int, error) {
	p := newProgress(stderr, "creating rooms", n)
	defer p.finish()
	// A worker claims one of the n places before it creates a room, and
	// gives the place back when it leaves the room: n rooms are kept.
	var next, claimed, left atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for claimed.Add(1) <= int64(n) {
				var out struct {
					RoomID string `json:"room_id"`
				}
				err := call(http.MethodPost, base+"/_matrix/client/v3/createRoom", token, map[string]any{"name": "bench " + strconv.FormatInt(next.Add(1), 10)}, &out)
				if err == nil && wants(out.RoomID) {
					p.add(1)
					continue
				}
				if err == nil {
					left.Add(1)
					err = call(http.MethodPost, base+"/_matrix/client/v3/rooms/"+neturl.PathEscape(out.RoomID)+"/leave", token, map[string]any{}, nil)
					claimed.Add(-1)
				}
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
			}
			claimed.Add(-1)
		}()
	}
	wg.Wait()
	return int(left.Load()), firstErr
}

// propagationProbe renames a user and watches its propagation.
type propagationProbe struct {
	base, secret, user, token string
	unanswered                int // probes asked again
}

// probeTimeout bounds one probe of the user's pending rooms: in a cluster
// a message to another node may be lost, and the probe is asked again.
const probeTimeout = 5 * time.Second

func (p *propagationProbe) rename(name string) error {
	return call(http.MethodPut, p.base+"/_matrix/client/v3/profile/"+neturl.PathEscape(p.user)+"/displayname", p.token, map[string]string{"displayname": name}, nil)
}

// waitSettled polls the admin API until no room is behind the user's latest
// profile version; it returns the time since start.
func (p *propagationProbe) waitSettled(start time.Time, limit time.Duration) (time.Duration, error) {
	for {
		var out struct {
			Pending int `json:"pending"`
		}
		ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.base+"/_persona/admin/v1/users/"+neturl.PathEscape(p.user)+"/pending?limit=0", nil)
		req.Header.Set(api.SecretHeader, p.secret)
		err := do(req, &out)
		cancel()
		switch {
		case err != nil && time.Since(start) > limit:
			return 0, err
		case err != nil:
			p.unanswered++
		case out.Pending == 0:
			return time.Since(start), nil
		case time.Since(start) > limit:
			return 0, fmt.Errorf("bench: %d rooms still behind after %s", out.Pending, limit)
		}
		// Each probe costs the node a request: probing every millisecond
		// through a long fan-out would slow what it measures. Waiting 1% of
		// the time elapsed bounds the error at 1%.
		time.Sleep(max(time.Millisecond, time.Since(start)/100))
	}
}

// verify reads the user's member event in up to max of its rooms and checks
// it carries name.
func (p *propagationProbe) verify(name string, max int) (int, error) {
	var joined struct {
		Rooms []string `json:"joined_rooms"`
	}
	if err := call(http.MethodGet, p.base+"/_matrix/client/v3/joined_rooms", p.token, nil, &joined); err != nil {
		return 0, err
	}
	n := 0
	for _, room := range joined.Rooms {
		if n == max {
			break
		}
		var content struct {
			Displayname string `json:"displayname"`
		}
		url := p.base + "/_matrix/client/v3/rooms/" + neturl.PathEscape(room) + "/state/m.room.member/" + neturl.PathEscape(p.user)
		if err := call(http.MethodGet, url, p.token, nil, &content); err != nil {
			return n, err
		}
		if content.Displayname != name {
			return n, fmt.Errorf("bench: room %s shows %q, want %q", room, content.Displayname, name)
		}
		n++
	}
	return n, nil
}

// fetchTrace writes an execution trace of d from the node's pprof endpoint
// to path.
func fetchTrace(metricsAddr, path string, d time.Duration) error {
	if metricsAddr == "" {
		return errors.New("bench: --trace needs listen.metrics")
	}
	resp, err := httpClient.Get(fmt.Sprintf("http://%s/debug/pprof/trace?seconds=%g", metricsAddr, d.Seconds()))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("bench: trace: %s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// nodeRSS reads process_resident_memory_bytes from the node's /metrics.
func nodeRSS(metricsAddr string) (int64, error) {
	body, err := scrape(metricsAddr)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, "process_resident_memory_bytes "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int64(f), err
		}
	}
	return 0, errors.New("no process_resident_memory_bytes in /metrics")
}

// scrape returns the node's /metrics text.
func scrape(metricsAddr string) (string, error) {
	if metricsAddr == "" {
		return "", errors.New("no metrics listener")
	}
	resp, err := httpClient.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// histogram is one of the node's own request histograms: cumulative counts
// by upper bound in seconds.
type histogram map[float64]float64

// The node's histograms of successful profile PUTs (both users during the
// burst) and whole-profile GETs (the other user alone).
const (
	putSeries = `persona_http_request_duration_seconds_bucket{method="PUT",route="PUT /_matrix/client/v3/profile/{userId}/{keyName}",status="200",le="`
	getSeries = `persona_http_request_duration_seconds_bucket{method="GET",route="GET /_matrix/client/v3/profile/{userId}",status="200",le="`
)

// nodeHistograms scrapes the node's histograms of series.
func nodeHistograms(metricsAddr string, series ...string) ([]histogram, error) {
	body, err := scrape(metricsAddr)
	if err != nil {
		return nil, err
	}
	hs := make([]histogram, len(series))
	for i, s := range series {
		hs[i] = parseHistogram(body, s)
	}
	return hs, nil
}

func parseHistogram(body, series string) histogram {
	h := histogram{}
	for _, line := range strings.Split(body, "\n") {
		rest, ok := strings.CutPrefix(line, series)
		if !ok {
			continue
		}
		le, count, ok := strings.Cut(rest, `"} `)
		if !ok || le == "+Inf" {
			continue
		}
		bound, err1 := strconv.ParseFloat(le, 64)
		n, err2 := strconv.ParseFloat(strings.TrimSpace(count), 64)
		if err1 == nil && err2 == nil {
			h[bound] = n
		}
	}
	return h
}

// p99Since is the smallest bucket bound holding 99% of the requests
// observed since before, with the number of those requests.
func (h histogram) p99Since(before histogram) (bound float64, n int) {
	bounds := make([]float64, 0, len(h))
	for b := range h {
		bounds = append(bounds, b)
	}
	slices.Sort(bounds)
	if len(bounds) == 0 {
		return 0, 0
	}
	total := h[bounds[len(bounds)-1]] - before[bounds[len(bounds)-1]]
	for _, b := range bounds {
		if h[b]-before[b] >= 0.99*total {
			return b, int(total)
		}
	}
	return bounds[len(bounds)-1], int(total)
}
