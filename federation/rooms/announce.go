package rooms

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"persona/actors"
	"persona/storage"
	"persona/wire"
)

// Profile updates out (MSC4259): once a local user's profile has changed,
// each server that shares a room with the user is sent a profile update
// EDU (uk.tcpip.msc4259.profile) naming the fields that changed, through
// its outbox. The MSC makes them best effort and lets a server combine
// them: changes are gathered per user and announced by one goroutine, so
// a burst of writes while a user's rooms are being asked for their servers
// makes one EDU per server. A change announced is in memory until then;
// a stop loses it (receivers fall back on their cache's expiry).

// announceTimeout bounds the asking of one user's rooms.
const announceTimeout = time.Minute

// announcer gathers the changes of local profiles and sends their EDUs.
type announcer struct {
	s       *Service
	mu      sync.Mutex
	pending map[string]map[string]json.RawMessage // by user: the fields changed, null for removed
	wake    chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
}

func newAnnouncer(s *Service) *announcer {
	ctx, cancel := context.WithCancel(context.Background())
	a := &announcer{s: s, pending: map[string]map[string]json.RawMessage{}, wake: make(chan struct{}, 1),
		ctx: ctx, cancel: cancel, done: make(chan struct{})}
	go a.run()
	return a
}

// ProfileChanged tells the servers that share a room with user, a local
// user, that fields of its profile changed (a null value: the field was
// removed), once the changes gathered before are told (api.Remote). It
// returns at once.
func (s *Service) ProfileChanged(user string, fields map[string]json.RawMessage) {
	a := s.announce
	a.mu.Lock()
	if a.pending[user] == nil {
		a.pending[user] = map[string]json.RawMessage{}
	}
	maps.Copy(a.pending[user], fields)
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// Close stops announcing profile changes, dropping those not yet told,
// and sweeping transaction records, and waits for both goroutines. Call
// it before the actors stop.
func (s *Service) Close() {
	s.announce.cancel()
	s.stopSweep()
	<-s.announce.done
	<-s.swept
}

func (a *announcer) run() {
	defer close(a.done)
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-a.wake:
		}
		a.mu.Lock()
		batch := a.pending
		a.pending = map[string]map[string]json.RawMessage{}
		a.mu.Unlock()
		for _, user := range slices.Sorted(maps.Keys(batch)) {
			if a.ctx.Err() != nil {
				return
			}
			if err := a.tell(user, batch[user]); err != nil {
				a.s.log.Warn("profile update not announced", "user", user, "err", err)
			}
		}
	}
}

// roomsAsked is how many of a user's rooms tell asks for their servers at
// once.
const roomsAsked = 32

// tell queues the EDU of user's changed fields for every server with a
// member joined to one of user's joined rooms.
func (a *announcer) tell(user string, fields map[string]json.RawMessage) error {
	if !a.s.federated() {
		return nil // no other server was ever met: no room has members elsewhere
	}
	ctx, cancel := context.WithTimeout(a.ctx, announceTimeout)
	defer cancel()
	reply, err := a.s.actors.Request(ctx, actors.KindUser, user, &wire.GetRooms{UserId: user})
	if err != nil {
		return err
	}
	rooms, ok := reply.(*wire.RoomsReply)
	if !ok {
		return fmt.Errorf("GetRooms answered %T", reply)
	}
	servers := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	slots := make(chan struct{}, roomsAsked)
	for _, m := range rooms.Rooms {
		if m.Membership != "join" {
			continue
		}
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			st, err := ask[*wire.ServersReply](ctx, a.s, actors.KindRoom, m.RoomId, &wire.GetServers{RoomId: m.RoomId})
			if err != nil {
				return // gone meanwhile: nobody there to tell
			}
			mu.Lock()
			for _, server := range st.Servers {
				servers[server] = true
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(servers) == 0 {
		return nil
	}
	content, err := json.Marshal(map[string]any{"user_id": user, "fields": fields})
	if err != nil {
		return err
	}
	for server := range servers {
		a.s.actors.Send(actors.KindOutbox, server, &wire.OutboundEDU{Destination: server, Type: eduProfileUnstable, Content: content})
	}
	return nil
}

// federated reports whether this server ever met another (holds another
// server's key, which every join, invite or transaction between them
// fetched): until then no room has members elsewhere, and a profile
// change need not ask the user's rooms for their servers.
func (s *Service) federated() bool {
	if s.met.Load() {
		return true
	}
	found := false
	_ = s.store.Scan(storage.Prefix("fk", "key"), nil, func(_, _ []byte) error {
		found = true
		return storage.ErrStopScan
	})
	if found {
		s.met.Store(true)
	}
	return found
}
