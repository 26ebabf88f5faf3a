package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"persona/config"
	"persona/internal/testnode"
)

// TestPrometheusAnswersEveryExpression starts two federating nodes (the
// first alone in a cluster), puts them under a small load (registrations,
// rooms, renames that reach local and remote rooms), checks the first
// node's /metrics with promtool, and starts a real Prometheus scraping
// both every second with rules.yml loaded. It then asks Prometheus for
// every expression of the dashboard (for the first node's instance) and
// of the rules (an alert's with bool comparisons, so that a quiet alert
// still answers its series), and fails on any that errs or returns no
// series within the deadline.
func TestPrometheusAnswersEveryExpression(t *testing.T) {
	t.Parallel()
	prometheus, promtool := tool(t, "prometheus"), tool(t, "promtool")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	a := testnode.Start(t, "", func(c *config.Config) {
		testnode.ByAddress(t)(c)
		c.Cluster.Enabled, c.Cluster.NodeName = true, "a"
		c.Cluster.Bind, c.Cluster.ActorBind, c.Cluster.RaftBind = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	})
	b := testnode.Start(t, "", testnode.ByAddress(t))
	load(ctx, t, a, b)

	checkMetrics(ctx, t, promtool, a.MetricsAddr())
	api := startPrometheus(t, prometheus, a.MetricsAddr(), b.MetricsAddr())

	instance := strings.ReplaceAll(regexp.QuoteMeta(a.MetricsAddr()), `\`, `\\`)
	dashboard := strings.NewReplacer("$__rate_interval", "30s", "$instance", instance)
	var queries []string
	for _, e := range dashboardExprs(t) {
		queries = append(queries, dashboard.Replace(e))
	}
	for _, r := range readRules(t) {
		if r.Alert != "" {
			queries = append(queries, withBool(r.Expr))
		} else {
			queries = append(queries, r.Expr)
		}
	}

	// Recorded series and rates need a few scrapes and rule evaluations.
	pending := map[string]string{} // query -> why it failed last
	for _, q := range queries {
		pending[q] = "not asked yet"
	}
	deadline := time.Now().Add(90 * time.Second)
	for len(pending) > 0 && time.Now().Before(deadline) {
		for q := range pending {
			n, err := query(ctx, api, q)
			switch {
			case err != nil:
				pending[q] = err.Error()
			case n == 0:
				pending[q] = "no series"
			default:
				delete(pending, q)
			}
		}
		if len(pending) > 0 {
			time.Sleep(time.Second)
		}
	}
	for q, why := range pending {
		t.Errorf("%s: %s", q, why)
	}
	t.Logf("%d expressions answered with series", len(queries)-len(pending))
}

// load registers users on a and b, makes rooms on a that a user of b
// joins, renames users on both sides until the renames reached the rooms
// on both servers, and goes on renaming one user of a every half second
// until the test ends.
func load(ctx context.Context, t *testing.T, a, b *testnode.Node) {
	t.Helper()
	alice, carol, bob := a.Register(""), a.Register(""), b.Register("")
	var rooms []id.RoomID
	for i := range 3 {
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: fmt.Sprintf("room %d", i)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := carol.JoinRoom(ctx, string(created.RoomID), nil); err != nil {
			t.Fatal(err)
		}
		rooms = append(rooms, created.RoomID)
	}
	if _, err := bob.JoinRoom(ctx, string(rooms[0]), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
		t.Fatalf("a user of b joins a room of a: %v", err)
	}
	for i := range 5 {
		for _, cli := range []*mautrix.Client{alice, carol, bob} {
			if err := cli.SetDisplayName(ctx, fmt.Sprintf("%s %d", cli.UserID.Localpart(), i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := alice.GetProfile(ctx, bob.UserID); err != nil {
		t.Fatalf("a user of a reads the profile of a user of b: %v", err)
	}
	waitName(ctx, t, alice, rooms[0], bob.UserID, bob.UserID.Localpart()+" 4")
	waitName(ctx, t, bob, rooms[0], alice.UserID, alice.UserID.Localpart()+" 4")

	trickle, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-trickle.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
			_ = alice.SetDisplayName(trickle, fmt.Sprintf("alice trickle %d", i))
		}
	}()
	t.Cleanup(func() { stop(); wg.Wait() }) // before the nodes stop
}

// waitName waits until user's member event in room, as cli reads it,
// names them name.
func waitName(ctx context.Context, t *testing.T, cli *mautrix.Client, room id.RoomID, user id.UserID, name string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var content event.MemberEventContent
		err := cli.StateEvent(ctx, room, event.StateMember, string(user), &content)
		if err == nil && content.Displayname == name {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's member event in %s names them %q, want %q (%v)", user, room, content.Displayname, name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkMetrics runs promtool check metrics on what the node at addr
// serves on /metrics.
func checkMetrics(ctx context.Context, t *testing.T, promtool, addr string) {
	t.Helper()
	body := get(ctx, t, "http://"+addr+"/metrics")
	cmd := exec.CommandContext(ctx, promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics on %s/metrics: %v\n%s", addr, err, out)
	}
}

// startPrometheus starts Prometheus with its storage in a temp dir,
// scraping targets every second as job "persona" and evaluating rules.yml
// every second, on a free loopback port; it returns the base URL of its
// API once it is ready, and kills it when the test ends.
func startPrometheus(t *testing.T, bin string, targets ...string) string {
	t.Helper()
	dir := t.TempDir()
	rules, err := filepath.Abs(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	quoted := make([]string, len(targets))
	for i, target := range targets {
		quoted[i] = fmt.Sprintf("%q", target)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: persona
    static_configs:
      - targets: [%s]
`, rules, strings.Join(quoted, ", "))
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	logFile, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		_ = logFile.Close()
	})
	base := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err
			log, _ := os.ReadFile(logFile.Name())
			t.Fatalf("prometheus exited: %v\n%s", err, log)
		default:
		}
		if resp, err := http.Get(base + "/-/ready"); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus on %s not ready after 30s", addr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// query asks Prometheus at base for q now and returns how many series the
// answer holds, or the error Prometheus gave.
func query(ctx context.Context, base, q string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/query?query="+url.QueryEscape(q), nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var answer struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
		Data      struct {
			ResultType string            `json:"resultType"`
			Result     []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
		return 0, fmt.Errorf("answer %s: %w", resp.Status, err)
	}
	if answer.Status != "success" {
		return 0, fmt.Errorf("%s: %s", answer.ErrorType, answer.Error)
	}
	if answer.Data.ResultType != "vector" {
		return 0, fmt.Errorf("a %s, not a vector", answer.Data.ResultType)
	}
	return len(answer.Data.Result), nil
}

// get returns the body of a 200 answer to GET url.
func get(ctx context.Context, t *testing.T, url string) []byte {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return body
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
