package outbox

import (
	"bufio"
	"crypto/ed25519"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"persona/host"
	"persona/internal/leakcheck"
	"persona/storage"
	"persona/wire"
)

// The environment of a re-executed test binary that queues PDUs until it is
// killed (see TestMain): its data directory, its rooms and the loopback
// address its destination is at (nothing listens there).
const (
	childDirEnv   = "PERSONA_OUTBOX_CHILD_DIR"
	childRoomsEnv = "PERSONA_OUTBOX_CHILD_ROOMS"
	childAddrEnv  = "PERSONA_OUTBOX_CHILD_ADDR"
)

// childPDUs is how many PDUs per room the child queues at most.
const childPDUs = 3000

// TestMain runs the child of TestSIGKILLLosesNoAckedPDU when asked to, and
// otherwise the tests, failing if a goroutine outlives them.
func TestMain(m *testing.M) {
	if dir := os.Getenv(childDirEnv); dir != "" {
		if err := runChild(dir, strings.Split(os.Getenv(childRoomsEnv), ","), os.Getenv(childAddrEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	leakcheck.Main(m)
}

// runChild starts an outbox on dir whose destination cannot be reached,
// queues PDUs of rooms five at a time in order, printing "ack <room> <pos>"
// for each ack its rooms get, and waits to be killed.
func runChild(dir string, rooms []string, addr string) error {
	st, err := storage.Open(dir, storage.Options{})
	if err != nil {
		return err
	}
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		return err
	}
	svc, err := New(st, Options{Origin: "origin.test", BackoffMin: 50 * time.Millisecond,
		Client: newTestClient("origin.test", key, map[string]string{"peer.test": addr}, http.DefaultTransport)})
	if err != nil {
		return err
	}
	var out sync.Mutex
	printer := host.Kind{Name: roomKind, New: func(string, *host.IdleWatch) actor.Actor {
		return actor.ReceiveFunc(func(c actor.Context) {
			if m, ok := c.Message().(*wire.OutboundAck); ok {
				out.Lock()
				fmt.Printf("ack %s %d\n", m.RoomId, m.Pos)
				out.Unlock()
			}
		})
	}}
	rt, err := host.New(host.Options{Partitions: 4, PassivateAfter: time.Minute}, svc.Kind(), printer)
	if err != nil {
		return err
	}
	svc.Attach(rt)
	if err := svc.Resume(); err != nil {
		return err
	}
	for pos := uint64(1); pos <= childPDUs; pos += 5 {
		for _, r := range rooms {
			rt.Send(kind, "peer.test", &wire.OutboundPDUs{Destination: "peer.test", RoomId: r, Pdus: pdus(r, pos, pos+4)})
		}
		time.Sleep(100 * time.Microsecond)
	}
	select {}
}

// TestSIGKILLLosesNoAckedPDU runs an outbox in a child process whose
// destination is down, SIGKILLs it while it queues, reopens its store and
// checks that the destination, back up, gets every PDU the child acked,
// each room's in order and each under one txnId.
func TestSIGKILLLosesNoAckedPDU(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	rooms := []string{newRoom(w.origin), newRoom(w.origin), newRoom(w.origin)}
	down, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := down.Addr().String()
	down.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childDirEnv+"="+w.dir, childRoomsEnv+"="+strings.Join(rooms, ","), childAddrEnv+"="+addr)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Should the child stall, kill it anyway; the test then fails below.
	stall := time.AfterFunc(time.Minute, func() { _ = cmd.Process.Signal(syscall.SIGKILL) })
	defer stall.Stop()
	acked := map[string]uint64{}
	lines, killed := 0, false
	scan := bufio.NewScanner(stdout)
	for scan.Scan() {
		f := strings.Fields(scan.Text())
		if len(f) != 3 || f[0] != "ack" {
			continue
		}
		pos, err := strconv.ParseUint(f[2], 10, 64)
		if err != nil {
			t.Fatalf("child printed %q", scan.Text())
		}
		acked[f[1]] = max(acked[f[1]], pos)
		if lines++; lines == 30 {
			// Acked, each of these, and more on their way: kill now.
			_ = cmd.Process.Signal(syscall.SIGKILL)
			killed = true
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("the child ended after %d acks: %v\n%s", lines, err, stderr.String())
	}
	t.Logf("killed the child after %d acks: %v", lines, acked)

	n := w.start(Options{}, time.Minute)
	waitFor(t, 30*time.Second, "every acked PDU delivered", func() bool {
		got := map[string]uint64{}
		for _, k := range w.pdusTo(w.dest) {
			room, pos, _ := strings.Cut(k, "/")
			p, _ := strconv.ParseUint(pos, 10, 64)
			got[room] = max(got[room], p)
		}
		for r, p := range acked {
			if got[r] < p {
				return false
			}
		}
		return true
	})
	waitFor(t, 30*time.Second, "the queue empty", func() bool { return n.state(w.dest).Queued == 0 })
	next := map[string]uint64{}
	for _, k := range w.pdusTo(w.dest) {
		room, pos, _ := strings.Cut(k, "/")
		p, _ := strconv.ParseUint(pos, 10, 64)
		if want := next[room] + 1; p != want {
			t.Fatalf("room %s: got pos %d, want %d: each room's PDUs once, in order", room, p, want)
		}
		next[room] = p
	}
	for _, r := range rooms {
		if next[r] < acked[r] {
			t.Errorf("room %s: delivered up to %d, acked %d", r, next[r], acked[r])
		}
	}
}
