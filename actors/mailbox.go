package actors

import (
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// depth counts the messages waiting in the mailboxes of one kind of actor:
// a mailbox middleware adds on post and subtracts on receive.
type depth struct{ n atomic.Int64 }

func (d *depth) MailboxStarted()                {}
func (d *depth) MessagePosted(any)              { d.n.Add(1) }
func (d *depth) MessageReceived(any)            { d.n.Add(-1) }
func (d *depth) MailboxEmpty()                  {}
func (d *depth) mailbox() actor.MailboxProducer { return actor.Unbounded(d) }

// sampleDepths publishes the mailbox depths to metrics every second until
// stop is closed.
func (h *Host) sampleDepths(stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			for kind, d := range h.depths {
				h.metrics.MailboxDepth(kind, int(d.n.Load()))
			}
		}
	}
}

// Priorities in a user's mailbox (protoactor's default is 4): the news that
// a write is durable goes first, since a client waits on its answer; rooms'
// acks go last, since a delay only postpones the next sends of a fan-out.
// Acks are cumulative and carry versions, so overtaking them is harmless.
func (*committed) GetPriority() int8  { return 7 }
func (*UpdateAcks) GetPriority() int8 { return 2 }
