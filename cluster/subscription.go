package cluster

import "sync"

// subscription hands events to one reader in order. Its queue has no
// bound, so the view never waits for the reader; membership events are
// few (a handful per member joining, failing or changing its metadata).
type subscription struct {
	out  chan Event
	wake chan struct{}
	done chan struct{}
	once sync.Once
	exit chan struct{}

	mu    sync.Mutex
	queue []Event
}

// newSubscription starts the goroutine that hands events out; end stops it.
func newSubscription() *subscription {
	s := &subscription{out: make(chan Event), wake: make(chan struct{}, 1),
		done: make(chan struct{}), exit: make(chan struct{})}
	go s.run()
	return s
}

// push queues ev for the reader.
func (s *subscription) push(ev Event) {
	s.mu.Lock()
	s.queue = append(s.queue, ev)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscription) run() {
	defer close(s.exit)
	defer close(s.out)
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			s.mu.Unlock()
			select {
			case <-s.wake:
				continue
			case <-s.done:
				return
			}
		}
		ev := s.queue[0]
		s.queue[0] = Event{}
		s.queue = s.queue[1:]
		s.mu.Unlock()
		select {
		case s.out <- ev:
		case <-s.done:
			return
		}
	}
}

// end stops handing events out, closes the channel and waits for the
// goroutine to end. end is idempotent.
func (s *subscription) end() {
	s.once.Do(func() { close(s.done) })
	<-s.exit
}
