package main

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/exp/trace"
)

// putRegion names the trace region of a profile write inside the node: the
// host marks every request to an actor as "<kind> <message type>".
const putRegion = "user *wire.SetProfileField"

// committerFunc is the store's committer, the goroutine that writes every
// batch to badger and syncs the commit log.
const committerFunc = "persona/storage.(*Store).committer"

// span is a stretch of a trace: a region, a GC mark phase, or one state of
// the committer.
type span struct {
	start, end trace.Time
	what       string
}

// traceReport reads the execution trace at path and writes where its n
// slowest profile writes waited: what the store's committer did meanwhile
// (synced the commit log, waited for badger to take the write, waited for
// a processor, ran, or idled while the write was in the HTTP server or the
// actors) and how much of each write a GC mark phase covered. It ends with
// the commit log's syncs over the whole trace.
func traceReport(path string, w io.Writer, n int) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	t, err := readTrace(f)
	if err != nil {
		return fmt.Errorf("bench: read trace: %w", err)
	}
	if len(t.puts) == 0 {
		fmt.Fprintln(w, "trace: no profile write in it")
		return nil
	}
	slices.SortFunc(t.puts, func(a, b span) int { return cmp.Compare(b.end-b.start, a.end-a.start) })
	fmt.Fprintf(w, "trace: the %d slowest of %d profile writes inside the node, and what the store's committer did meanwhile (ms):\n",
		min(n, len(t.puts)), len(t.puts))
	for _, put := range t.puts[:min(n, len(t.puts))] {
		by := overlaps(put, t.committer)
		var parts []string
		for _, k := range slices.SortedFunc(maps.Keys(by), func(a, b string) int { return cmp.Compare(by[b], by[a]) }) {
			if by[k] >= trace.Time(100*time.Microsecond) {
				parts = append(parts, fmt.Sprintf("%s %.1f", k, msOf(by[k])))
			}
		}
		fmt.Fprintf(w, "  %7.2f  %s; GC mark %.1f\n", msOf(put.end-put.start), strings.Join(parts, ", "), msOf(sum(overlaps(put, t.marks))))
	}
	var syncs []time.Duration
	for _, s := range t.committer {
		if s.what == "fdatasync" {
			syncs = append(syncs, time.Duration(s.end-s.start))
		}
	}
	if len(syncs) > 0 {
		slices.Sort(syncs)
		fmt.Fprintf(w, "trace: commit log syncs: %d, p50 %.2f ms, p99 %.2f ms, max %.2f ms; GC marking %.0f ms of %.0f ms\n",
			len(syncs), ms(percentile(syncs, 50)), ms(percentile(syncs, 99)), ms(syncs[len(syncs)-1]),
			msOf(total(t.marks)), msOf(t.last-t.first))
	}
	return nil
}

// parsedTrace is what traceReport takes from a trace.
type parsedTrace struct {
	puts, marks, committer []span
	first, last            trace.Time
}

// readTrace collects the profile writes' regions, the GC mark phases and
// the committer's states. The committer is found by its stack, so its
// states before its first transition with a stack are not seen.
func readTrace(r io.Reader) (*parsedTrace, error) {
	rd, err := trace.NewReader(r)
	if err != nil {
		return nil, err
	}
	t := &parsedTrace{}
	open := map[trace.GoID][]trace.Time{} // regions open per goroutine, innermost last
	var markStart trace.Time
	committer := trace.NoGoroutine
	var cur span // the committer's current state
	for {
		ev, err := rd.ReadEvent()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if t.first == 0 {
			t.first = ev.Time()
		}
		t.last = ev.Time()
		switch ev.Kind() {
		case trace.EventRegionBegin:
			open[ev.Goroutine()] = append(open[ev.Goroutine()], ev.Time())
		case trace.EventRegionEnd:
			st := open[ev.Goroutine()]
			if len(st) == 0 {
				continue // begun before the trace
			}
			start := st[len(st)-1]
			open[ev.Goroutine()] = st[:len(st)-1]
			if ev.Region().Type == putRegion {
				t.puts = append(t.puts, span{start, ev.Time(), ""})
			}
		case trace.EventRangeBegin, trace.EventRangeActive: // active: begun before the trace
			if ev.Range().Name == gcMark {
				markStart = ev.Time()
			}
		case trace.EventRangeEnd:
			if ev.Range().Name == gcMark && markStart != 0 {
				t.marks = append(t.marks, span{markStart, ev.Time(), ""})
				markStart = 0
			}
		case trace.EventStateTransition:
			st := ev.StateTransition()
			if st.Resource.Kind != trace.ResourceGoroutine {
				continue
			}
			g := st.Resource.Goroutine()
			if committer == trace.NoGoroutine && g == ev.Goroutine() && stackHas(ev.Stack(), committerFunc) {
				committer = g
			}
			if g != committer {
				continue
			}
			if cur.what != "" {
				cur.end = ev.Time()
				t.committer = append(t.committer, cur)
			}
			_, to := st.Goroutine()
			stack := ev.Stack()
			if g != ev.Goroutine() {
				stack = st.Stack
			}
			cur = span{start: ev.Time(), what: committerState(to, stack)}
		}
	}
	if markStart != 0 { // still marking when the trace ended
		t.marks = append(t.marks, span{markStart, t.last, ""})
	}
	return t, nil
}

// gcMark names the GC's concurrent mark phase in a trace.
const gcMark = "GC concurrent mark phase"

// committerState names what the committer does in state s with stack.
func committerState(s trace.GoState, stack trace.Stack) string {
	switch {
	case s == trace.GoRunning:
		return "running"
	case s == trace.GoRunnable:
		return "waiting for a processor"
	case s == trace.GoSyscall && stackHas(stack, "unix.Fdatasync"):
		return "fdatasync"
	case s == trace.GoSyscall:
		return "other syscalls"
	case stackHas(stack, "badger/v4.(*Txn).Commit"):
		return "badger taking the write"
	case stackHas(stack, committerFunc) && stackHas(stack, "runtime.selectgo") && !stackHas(stack, "storage.(*Store).commitRound"):
		return "idle (the write was elsewhere)"
	}
	return "waiting"
}

func stackHas(s trace.Stack, fn string) bool {
	for f := range s.Frames() {
		if strings.Contains(f.Func, fn) {
			return true
		}
	}
	return false
}

// overlaps sums, per kind, how much of in the spans cover.
func overlaps(in span, spans []span) map[string]trace.Time {
	by := map[string]trace.Time{}
	for _, s := range spans {
		if a, b := max(in.start, s.start), min(in.end, s.end); b > a {
			by[s.what] += b - a
		}
	}
	return by
}

func sum(by map[string]trace.Time) (t trace.Time) {
	for _, d := range by {
		t += d
	}
	return t
}

func total(spans []span) (t trace.Time) {
	for _, s := range spans {
		t += s.end - s.start
	}
	return t
}

// msOf converts a trace duration (nanoseconds) to milliseconds.
func msOf(d trace.Time) float64 { return float64(d) / 1e6 }
