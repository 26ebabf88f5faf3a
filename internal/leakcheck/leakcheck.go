// Package leakcheck fails a test binary whose goroutines outlive its
// tests, as goleak does, but waits a few seconds for them first: some end
// by themselves on a timer (memberlist's probe, protoactor's dead-letter
// throttle), and on a loaded machine that timer fires later than
// goleak's own retries wait. Tests only import it.
package leakcheck

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// settle is how long goroutines get to end after the tests pass.
const settle = 5 * time.Second

// Main runs m's tests and exits with their code, or 1 if they passed and
// a goroutine still runs settle after.
func Main(m *testing.M) {
	code := m.Run()
	if code == 0 && !Settled() {
		code = 1
	}
	os.Exit(code)
}

// Settled waits up to settle for the goroutines the tests started to end,
// and reports whether they did; it prints those that did not.
func Settled() bool {
	deadline := time.Now().Add(settle)
	err := goleak.Find()
	for err != nil && time.Now().Before(deadline) {
		err = goleak.Find()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "goroutines outlived the tests:", err)
		return false
	}
	return true
}
