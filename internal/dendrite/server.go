package dendrite

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options tunes a test peer; the zero value is a working one.
type Options struct {
	// ServerName is the peer's Matrix server name. Empty names it after its
	// own federation listener, 127.0.0.1:<port>: a name other servers reach
	// at that address with no well-known or SRV look-up.
	ServerName string
	// Configure, when set, edits dendrite.yaml, decoded into nested maps,
	// after the harness's own edits and before the first start.
	Configure func(cfg map[string]any)
	// StartTimeout bounds each wait for the peer to answer after a start
	// (60 s when zero).
	StartTimeout time.Duration
	// StopTimeout is how long Stop waits after SIGTERM before it sends
	// SIGKILL (15 s when zero).
	StopTimeout time.Duration
}

// Server is a running Dendrite process. Its URLs, name and folder stay the
// same across Stop and Restart.
type Server struct {
	// ClientURL is the Client-Server API, http://127.0.0.1:<port>.
	ClientURL string
	// FederationURL is the federation listener, https://127.0.0.1:<port>,
	// with a self-signed certificate.
	FederationURL string
	// ServerName is the peer's Matrix server name.
	ServerName string
	// Dir holds the peer's config, keys, data and its log, dendrite.log.
	Dir string

	t       testing.TB
	opts    Options
	bin     string
	args    []string
	logPath string
	secret  string

	mu     sync.Mutex
	proc   *exec.Cmd
	exited chan struct{} // closed when proc has exited
}

// Start builds Dendrite if needed (Ensure), configures a peer in a temp dir
// on two free loopback ports and starts it, returning once both its client
// and federation listeners answer. It fails t when any step fails. The peer
// stops when the test ends; the tail of its log is printed if the test
// failed.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 60 * time.Second
	}
	if opts.StopTimeout == 0 {
		opts.StopTimeout = 15 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	binDir, err := Ensure(ctx)
	if err != nil {
		t.Fatalf("build dendrite: %v", err)
	}
	ports, err := freePorts(2)
	if err != nil {
		t.Fatalf("pick dendrite ports: %v", err)
	}
	clientAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	fedAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	s := &Server{
		ClientURL:     "http://" + clientAddr,
		FederationURL: "https://" + fedAddr,
		ServerName:    opts.ServerName,
		Dir:           t.TempDir(),
		t:             t,
		opts:          opts,
		bin:           filepath.Join(binDir, "dendrite"),
		secret:        randomHex(16),
	}
	if s.ServerName == "" {
		s.ServerName = fedAddr
	}
	s.logPath = filepath.Join(s.Dir, "dendrite.log")
	if err := s.setup(binDir); err != nil {
		t.Fatalf("configure dendrite: %v", err)
	}
	s.args = []string{
		"--config", filepath.Join(s.Dir, "dendrite.yaml"),
		"--http-bind-address", clientAddr,
		"--https-bind-address", fedAddr,
		"--tls-cert", filepath.Join(s.Dir, "server.crt"),
		"--tls-key", filepath.Join(s.Dir, "server.key"),
		"--really-enable-open-registration",
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dendrite %s, last lines of %s:\n%s", s.ServerName, s.logPath, tail(s.logPath, 60))
		}
	})
	t.Cleanup(s.Stop)
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	return s
}

// setup writes the peer's keys and its edited dendrite.yaml into s.Dir.
func (s *Server) setup(binDir string) error {
	if err := os.Mkdir(filepath.Join(s.Dir, "data"), 0o755); err != nil {
		return fmt.Errorf("create dendrite data folder: %w", err)
	}
	keys := exec.Command(filepath.Join(binDir, "generate-keys"),
		"--private-key", "matrix_key.pem", "--tls-cert", "server.crt", "--tls-key", "server.key")
	keys.Dir = s.Dir
	if out, err := keys.CombinedOutput(); err != nil {
		return fmt.Errorf("generate-keys: %w\n%s", err, out)
	}
	gen := exec.Command(filepath.Join(binDir, "generate-config"),
		"-dir", filepath.Join(s.Dir, "data"), "-server", s.ServerName)
	var stderr bytes.Buffer
	gen.Stderr = &stderr
	cfg, err := gen.Output()
	if err != nil {
		return fmt.Errorf("generate-config: %w\n%s", err, stderr.Bytes())
	}
	path := filepath.Join(s.Dir, "dendrite.yaml")
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		return fmt.Errorf("write dendrite config: %w", err)
	}
	return editConfig(path, s.secret, s.opts.Configure)
}

// Restart starts the peer again with the same config, data and ports,
// stopping it first if it runs, and returns once it answers. When the peer
// does not come up, Restart ends the process and returns why; the tail of
// its log is printed when the test fails. It may be called from any
// goroutine.
func (s *Server) Restart() error {
	s.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	log, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open dendrite log: %w", err)
	}
	cmd := exec.Command(s.bin, s.args...)
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = sysProcAttr()
	err = cmd.Start()
	_ = log.Close()
	if err != nil {
		return fmt.Errorf("start dendrite: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	if err := s.waitReady(exited); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("dendrite %s did not come up (log in %s): %w", s.ServerName, s.logPath, err)
	}
	s.proc, s.exited = cmd, exited
	return nil
}

// waitReady polls the client and federation listeners until both answer,
// the process exits or opts.StartTimeout passes.
func (s *Server) waitReady(exited <-chan struct{}) error {
	client := &http.Client{
		Timeout: 2 * time.Second,
		// The federation listener's certificate is self-signed.
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	}
	defer client.CloseIdleConnections()
	urls := []string{s.ClientURL + "/_matrix/client/versions", s.FederationURL + "/_matrix/key/v2/server"}
	deadline := time.Now().Add(s.opts.StartTimeout)
	var last error
	for len(urls) > 0 {
		resp, err := client.Get(urls[0])
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				urls = urls[1:]
				continue
			}
			err = fmt.Errorf("GET %s: %s", urls[0], resp.Status)
		}
		last = err
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer within %s: %w", s.opts.StartTimeout, last)
		}
		select {
		case <-exited:
			return errors.New("the process exited")
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// Stop ends the peer: SIGTERM to its PID, then SIGKILL after
// opts.StopTimeout. Stopping a stopped peer does nothing. It marks the test
// that started the server failed if the peer had exited by itself. It may
// be called from any goroutine.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return
	}
	proc, exited := s.proc, s.exited
	s.proc, s.exited = nil, nil
	select {
	case <-exited:
		s.t.Errorf("dendrite %s (pid %d) exited before it was stopped: %v", s.ServerName, proc.Process.Pid, proc.ProcessState)
		return
	default:
	}
	_ = proc.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(s.opts.StopTimeout):
		s.t.Logf("dendrite %s (pid %d) still runs %s after SIGTERM: killing it", s.ServerName, proc.Process.Pid, s.opts.StopTimeout)
		_ = proc.Process.Kill()
		<-exited
	}
}

// freePorts returns n distinct loopback TCP ports that were free a moment
// ago.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// tail returns the last n lines of the file at path, or why it cannot.
func tail(path string, n int) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	raw = bytes.TrimRight(raw, "\n")
	for i := len(raw) - 1; i >= 0; i-- {
		if raw[i] == '\n' {
			if n--; n == 0 {
				return string(raw[i+1:])
			}
		}
	}
	return string(raw)
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
