package host

import (
	"sync/atomic"
	"time"
)

// depth counts the messages waiting in the mailboxes of one kind of actor:
// a mailbox middleware adds on post and subtracts on receive.
type depth struct{ n atomic.Int64 }

// MailboxStarted is part of actor.MailboxMiddleware.
func (d *depth) MailboxStarted() {}

// MessagePosted counts a message in.
func (d *depth) MessagePosted(any) { d.n.Add(1) }

// MessageReceived counts a message out.
func (d *depth) MessageReceived(any) { d.n.Add(-1) }

// MailboxEmpty is part of actor.MailboxMiddleware.
func (d *depth) MailboxEmpty() {}

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
				h.opts.Metrics.MailboxDepth(kind, int(d.n.Load()))
			}
		}
	}
}
