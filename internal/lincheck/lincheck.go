// Package lincheck records what clients did to users' profiles and checks
// the record with porcupine, the linearizability checker etcd's robustness
// tests use: every user's display name must behave as one register, so an
// acknowledged write is never lost and no read sees a value older than a
// write acknowledged before the read began.
//
// Tests of a node or a cluster record each request as it is made (Write,
// Read) and end it with what came back; Check then looks for an order of
// the operations, consistent with real time, that a single register could
// have produced. A write whose outcome is not known (a timeout, a lost
// connection, a 5xx) may or may not have happened: it stays open to the
// end of the history. A write refused for certain and a failed read are
// left out.
package lincheck

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Outcome is what a client knows of a write once its request ended.
type Outcome int

const (
	// Acked means the server acknowledged the write.
	Acked Outcome = iota
	// Refused means the server answered that it did not apply the write
	// (a 4xx): it is left out of the history.
	Refused
	// Unknown means the client cannot tell (no answer, a 5xx): the write
	// may take effect at any time from its start on.
	Unknown
)

// History is a concurrent record of profile operations, each on one
// user's display name. Its zero value is not usable; see New.
type History struct {
	initial map[string]string
	mu      sync.Mutex
	ops     []porcupine.Operation
	open    []int // indexes in ops of writes with an unknown outcome
	start   time.Time
}

// New returns an empty history in which every user's display name starts
// as initial gives it ("" for a user not in it).
func New(initial map[string]string) *History {
	return &History{initial: initial, start: time.Now()}
}

// input is one operation's request: a read, or a write of value.
type input struct {
	user  string
	write bool
	value string
}

// now is the time since the history began, in nanoseconds.
func (h *History) now() int64 { return int64(time.Since(h.start)) }

// Write records that client starts writing name as user's display name;
// the caller calls the function returned once the request ended.
func (h *History) Write(client int, user, name string) (end func(Outcome)) {
	call := h.now()
	return func(o Outcome) {
		ret := h.now()
		h.mu.Lock()
		defer h.mu.Unlock()
		switch o {
		case Refused:
			return
		case Unknown:
			h.open = append(h.open, len(h.ops))
		}
		h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: input{user, true, name}, Call: call, Return: ret})
	}
}

// Read records that client starts reading user's display name; the caller
// calls the function returned with the name read, or ok false when the
// read failed.
func (h *History) Read(client int, user string) (end func(name string, ok bool)) {
	call := h.now()
	return func(name string, ok bool) {
		ret := h.now()
		if !ok {
			return
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: input{user, false, ""}, Output: name, Call: call, Return: ret})
	}
}

// Len returns how many operations the history holds.
func (h *History) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ops)
}

// Result is Check's verdict.
type Result struct {
	// Linearizable is true when an order was found; false when none
	// exists, or when the check ran out of time (Decided false).
	Linearizable bool
	// Decided is false when the check ran out of time before a verdict.
	Decided bool
	// Operations is the number of operations checked; Users the number of
	// users they touched.
	Operations, Users int
	// Visualization is the HTML file porcupine drew the history in, when
	// Check was given a path and the history is not linearizable.
	Visualization string
}

// Check looks for a linearization of the history within timeout, and
// when there is none and visualization is not "", draws the history there
// (an HTML page naming the operations no order could place).
func (h *History) Check(timeout time.Duration, visualization string) (Result, error) {
	h.mu.Lock()
	ops := append([]porcupine.Operation(nil), h.ops...)
	read := map[input]bool{} // the names some read returned
	for _, op := range ops {
		if in := op.Input.(input); !in.write {
			read[input{in.user, true, op.Output.(string)}] = true
		}
	}
	// A write of unknown outcome that no read saw may be placed last, where
	// it changes nothing: leaving it out keeps the verdict and spares the
	// search.
	drop := map[int]bool{}
	for _, i := range h.open {
		ops[i].Return = h.now() + int64(time.Hour)
		if !read[ops[i].Input.(input)] {
			drop[i] = true
		}
	}
	h.mu.Unlock()
	if len(drop) > 0 {
		kept := ops[:0]
		for i, op := range ops {
			if !drop[i] {
				kept = append(kept, op)
			}
		}
		ops = kept
	}
	model := h.model()
	users := map[string]bool{}
	for _, op := range ops {
		users[op.Input.(input).user] = true
	}
	res, info := porcupine.CheckOperationsVerbose(model, ops, timeout)
	out := Result{Linearizable: res == porcupine.Ok, Decided: res != porcupine.Unknown, Operations: len(ops), Users: len(users)}
	if res == porcupine.Illegal && visualization != "" {
		f, err := os.Create(visualization)
		if err != nil {
			return out, err
		}
		defer f.Close()
		if err := porcupine.Visualize(model, info, f); err != nil {
			return out, fmt.Errorf("lincheck: draw the history: %w", err)
		}
		out.Visualization = visualization
	}
	return out, nil
}

// model is a register per user, partitioned by user so that each user's
// operations are checked alone.
func (h *History) model() porcupine.Model {
	return porcupine.Model{
		Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
			byUser := map[string][]porcupine.Operation{}
			var order []string
			for _, op := range history {
				u := op.Input.(input).user
				if _, seen := byUser[u]; !seen {
					order = append(order, u)
				}
				byUser[u] = append(byUser[u], op)
			}
			parts := make([][]porcupine.Operation, 0, len(order))
			for _, u := range order {
				parts = append(parts, byUser[u])
			}
			return parts
		},
		// The state is the user's name; every operation of one partition
		// is of one user, whose initial name is taken on the first step.
		Init: func() any { return (*string)(nil) },
		Step: func(state, in, out any) (bool, any) {
			i := in.(input)
			name := h.initial[i.user]
			if s := state.(*string); s != nil {
				name = *s
			}
			if i.write {
				return true, &i.value
			}
			return out.(string) == name, &name
		},
		Equal: func(a, b any) bool {
			x, y := a.(*string), b.(*string)
			return x == y || (x != nil && y != nil && *x == *y)
		},
		DescribeOperation: func(in, out any) string {
			i := in.(input)
			if i.write {
				return fmt.Sprintf("%s := %q", i.user, i.value)
			}
			return fmt.Sprintf("%s -> %q", i.user, out)
		},
		DescribeState: func(state any) string {
			if s := state.(*string); s != nil {
				return fmt.Sprintf("%q", *s)
			}
			return "initial"
		},
	}
}
