package actors

import (
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"
)

// roomThroughput is how many user messages a room handles in one turn on
// the workers before its next turn queues behind the other rooms'.
const roomThroughput = 300

// roomMailbox is a room's mailbox, and its place on the room workers: a
// turn handles the system messages, then up to roomThroughput user
// messages. A turn with a client's request waiting goes in the fast lane,
// ahead of rooms that have only propagation to apply. It stands in for
// protoactor's unbounded mailbox and dispatcher: an idle room's queues
// hold no buffer, where protoactor's keep a ring buffer and a queue node
// per actor (about 650 B).
type roomMailbox struct {
	w       *workers
	depth   *depth // the room kind's mailbox depth
	invoker actor.MessageInvoker
	turnFn  func() // turn, made once

	users     atomic.Int32 // user messages queued
	mu        sync.Mutex
	sys, user fifo[any]
	scheduled bool // a turn is queued on the workers or running
	suspended bool
	fast      bool // a client's request waits: the next turn goes in the fast lane
}

func newRoomMailbox(w *workers, d *depth) *roomMailbox {
	mb := &roomMailbox{w: w, depth: d}
	mb.turnFn = mb.turn
	return mb
}

// PostUserMessage queues a message for the room. Rooms get no
// actor.MessageBatch.
func (mb *roomMailbox) PostUserMessage(m any) {
	mb.depth.MessagePosted(m)
	mb.users.Add(1)
	mb.mu.Lock()
	mb.user.push(m)
	mb.fast = mb.fast || fastForRoom(m)
	mb.scheduleLocked()
}

// PostSystemMessage queues a system message, handled before user messages.
func (mb *roomMailbox) PostSystemMessage(m any) {
	mb.depth.MessagePosted(m)
	mb.mu.Lock()
	mb.sys.push(m)
	mb.fast = mb.fast || fastForRoom(m)
	mb.scheduleLocked()
}

// RegisterHandlers is part of actor.Mailbox; the room's turns run on the
// workers, whatever the dispatcher.
func (mb *roomMailbox) RegisterHandlers(invoker actor.MessageInvoker, _ actor.Dispatcher) {
	mb.invoker = invoker
}

// Start is part of actor.Mailbox.
func (mb *roomMailbox) Start() {}

// UserMessageCount is the number of user messages queued.
func (mb *roomMailbox) UserMessageCount() int { return int(mb.users.Load()) }

// scheduleLocked queues a turn unless one is queued or running, and
// unlocks mb.mu.
func (mb *roomMailbox) scheduleLocked() {
	if mb.scheduled {
		mb.mu.Unlock()
		return
	}
	mb.scheduled = true
	fast := mb.fast
	mb.fast = false
	mb.mu.Unlock()
	mb.w.schedule(mb.turnFn, fast)
}

// turn runs the room's messages, then queues its next turn if messages
// wait, or marks it idle and drops its queues' buffers.
func (mb *roomMailbox) turn() {
	mb.run()
	mb.mu.Lock()
	if !mb.sys.empty() || (!mb.suspended && !mb.user.empty()) {
		fast := mb.fast
		mb.fast = false
		mb.mu.Unlock()
		mb.w.schedule(mb.turnFn, fast)
		return
	}
	mb.scheduled = false
	if mb.sys.empty() {
		mb.sys = fifo[any]{}
	}
	if mb.user.empty() {
		mb.user = fifo[any]{}
	}
	mb.mu.Unlock()
}

// run handles system messages first, then user messages, until the queues
// are empty, the mailbox is suspended or the turn has handled
// roomThroughput messages. A panic goes to the actor's supervisor.
func (mb *roomMailbox) run() {
	var msg any
	defer func() {
		if r := recover(); r != nil {
			mb.invoker.EscalateFailure(r, msg)
		}
	}()
	for range roomThroughput {
		mb.mu.Lock()
		if !mb.sys.empty() {
			msg = mb.sys.pop()
			mb.depth.MessageReceived(msg)
			switch msg.(type) {
			case *actor.SuspendMailbox:
				mb.suspended = true
				mb.mu.Unlock()
			case *actor.ResumeMailbox:
				mb.suspended = false
				mb.mu.Unlock()
			default:
				mb.mu.Unlock()
				mb.invoker.InvokeSystemMessage(msg)
			}
			continue
		}
		if mb.suspended || mb.user.empty() {
			mb.mu.Unlock()
			return
		}
		msg = mb.user.pop()
		mb.mu.Unlock()
		mb.users.Add(-1)
		mb.depth.MessageReceived(msg) // out of the queue, even if handling it panics
		mb.invoker.InvokeUserMessage(msg)
	}
}

// fastForRoom tells whether m puts the room's next turn in the fast lane:
// a client's request, the commit a client waits on, or protoactor's own
// protobuf messages (stop, watch); not propagation.
func fastForRoom(m any) bool {
	if env, ok := m.(*actor.MessageEnvelope); ok {
		m = env.Message
	}
	switch m := m.(type) {
	case *ProfileUpdates, *MembershipAck:
		return false
	case *committed:
		return m.client
	case proto.Message:
		return true
	}
	return false
}
