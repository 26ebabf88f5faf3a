package host

import (
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// TestNetYieldPollsTheNetwork: with one processor and a goroutine that
// never parks, data waiting on a connection is read after a yield or two.
// runtime.Gosched alone leaves it to the runtime's monitor, up to 10 ms.
func TestNetYieldPollsTheNetwork(t *testing.T) {
	y, err := newNetYield()
	if err != nil {
		t.Fatal(err)
	}
	defer y.close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	var read atomic.Bool
	reading := make(chan struct{})
	go func() {
		close(reading)
		buf := make([]byte, 1)
		if _, err := server.Read(buf); err == nil {
			read.Store(true)
		}
	}()
	<-reading
	time.Sleep(10 * time.Millisecond) // the reader parks in the netpoller

	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	if _, err := client.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		y.yield()
		if read.Load() {
			t.Logf("read after %d yields", i)
			return
		}
	}
	t.Fatal("the reader did not run within 3 yields")
}

// TestNetYieldAfterClose: a nil yield (no pipe) falls back to Gosched, and
// close ends the pipe's reader.
func TestNetYieldAfterClose(t *testing.T) {
	t.Parallel()
	var none *netYield
	none.yield()
	none.close()
	y, err := newNetYield()
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		y.yield()
	}
	y.close()
}
