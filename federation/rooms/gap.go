package rooms

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"persona/actors"
	"persona/wire"
)

// Gaps in a room's DAG, as Synapse and Dendrite fill them. A PDU whose
// prev events its room lacks gets from its origin the events between the
// room's forward extremities and it (get_missing_events, once), delivered
// oldest first. One of those whose prev events are still missing (the
// oldest) gets the state at each missing one from the origin
// (/state_ids?event_id=): the events of that state, of
// its auth chain, and the missing event itself that the room lacks are
// fetched one by one (/event), checked (signatures, content hash), and
// handed to the room with the state's ids (ReceiveState), which holds them
// as outliers and checks the event against that state.

const (
	// missingLimit is how many missing events one get_missing_events
	// asks for.
	missingLimit = 20
	// maxStateFetch bounds the events one missing event's state may need
	// fetched: a gap that needs more is left unfilled.
	maxStateFetch = 1000
	// fetchesAtOnce is how many /event requests of one gap are in flight
	// at the same time.
	fetchesAtOnce = 8
)

// fetchMissing asks origin for the events between the room's forward
// extremities and ev, and delivers them oldest first, filling the gap
// before any of them from the state (deliverPulled).
func (s *Service) fetchMissing(ctx context.Context, origin spec.ServerName, verImpl gomatrixserverlib.IRoomVersion, ev gomatrixserverlib.PDU) error {
	room := ev.RoomID().String()
	info, err := ask[*wire.RoomVersionReply](ctx, s, actors.KindRoom, room, &wire.GetRoomVersion{RoomId: room})
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	resp, err := s.fed.Client().LookupMissingEvents(rctx, spec.ServerName(s.cfg.ServerName), origin, room,
		fclient.MissingEvents{Limit: missingLimit, EarliestEvents: info.Extremities, LatestEvents: []string{ev.EventID()}}, verImpl.Version())
	if err != nil {
		return err
	}
	events := resp.Events.UntrustedEvents(verImpl.Version())
	slices.SortStableFunc(events, func(a, b gomatrixserverlib.PDU) int { return cmp.Compare(a.Depth(), b.Depth()) })
	for _, m := range events {
		if m.RoomID().String() != room || m.EventID() == ev.EventID() {
			continue
		}
		checked, err := s.verify(ctx, verImpl, m.JSON())
		if err != nil {
			continue
		}
		if err := s.deliverPulled(ctx, origin, verImpl, checked); err != nil {
			s.log.Info("missing event not taken", "origin", origin, "event", m.EventID(), "err", describe(err))
		}
	}
	return nil
}

// deliverPulled hands the room an event fetched to fill a gap, after the
// state at the prev events the room lacks.
func (s *Service) deliverPulled(ctx context.Context, origin spec.ServerName, verImpl gomatrixserverlib.IRoomVersion, ev gomatrixserverlib.PDU) error {
	reply, err := s.receive(ctx, origin, ev)
	if err != nil || len(reply.Missing) == 0 {
		return err
	}
	if err := s.fetchState(ctx, origin, verImpl, ev.RoomID().String(), reply.Missing); err != nil {
		return err
	}
	_, err = s.receive(ctx, origin, ev)
	return err
}

// fetchState gives the room the state at each of the missing events, as
// origin tells it.
func (s *Service) fetchState(ctx context.Context, origin spec.ServerName, verImpl gomatrixserverlib.IRoomVersion, room string, missing []string) error {
	me := spec.ServerName(s.cfg.ServerName)
	for _, at := range missing {
		rctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
		ids, err := s.fed.Client().LookupStateIDs(rctx, me, origin, room, at)
		cancel()
		if err != nil {
			return fmt.Errorf("state_ids at %s: %w", at, err)
		}
		want := append(append(slices.Clone(ids.StateEventIDs), ids.AuthEventIDs...), at)
		lack, err := ask[*wire.LackingReply](ctx, s, actors.KindRoom, room, &wire.GetLacking{RoomId: room, EventIds: want})
		if err != nil {
			return err
		}
		if len(lack.EventIds) > maxStateFetch {
			return fmt.Errorf("the state at %s needs %d events fetched, more than %d", at, len(lack.EventIds), maxStateFetch)
		}
		pdus, err := s.fetchEvents(ctx, origin, verImpl, room, lack.EventIds)
		if err != nil {
			return err // nothing recorded: a later event asks again
		}
		msg := &wire.ReceiveState{RoomId: room, Origin: string(origin), At: at, StateIds: ids.StateEventIDs, Pdus: pdus}
		reply, err := ask[*wire.ReceiveReply](ctx, s, actors.KindRoom, room, msg)
		if err != nil {
			return err
		}
		if reply.Rejected != "" {
			return fmt.Errorf("the room refused the state at %s: %s", at, reply.Rejected)
		}
	}
	return nil
}

// fetchEvents fetches events of room from origin (/event), fetchesAtOnce
// at a time, and returns those whose signatures and content hash check,
// in no particular order. An event origin does not give (a 4xx, or another
// event, or one that fails its checks) is left out, and the room rejects
// what rests on it; an event not had for a cause that may pass (no answer,
// a 5xx, 408, 429) fails the whole fetch instead, so that nothing is
// rejected before its time ("premature to reject", as Synapse says).
func (s *Service) fetchEvents(ctx context.Context, origin spec.ServerName, verImpl gomatrixserverlib.IRoomVersion, room string, ids []string) ([][]byte, error) {
	var (
		mu      sync.Mutex
		out     [][]byte
		passing error
		wg      sync.WaitGroup
	)
	slots := make(chan struct{}, fetchesAtOnce)
	for _, id := range ids {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer func() { <-slots; wg.Done() }()
			ev, err := s.fetchEvent(ctx, origin, verImpl, id)
			if err == nil && ev.RoomID().String() != room {
				err = fmt.Errorf("%w: it is of %s", errNotGiven, ev.RoomID())
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				out = append(out, ev.JSON())
			case mayPass(err):
				passing = cmp.Or(passing, fmt.Errorf("event %s of a gap's state: %w", id, err))
			default:
				s.log.Info("event of a gap's state not had", "origin", origin, "event", id, "err", describe(err))
			}
		}()
	}
	wg.Wait()
	return out, passing
}

// errNotGiven is a server's answer to /event that holds no such event of
// the room: asking again gets the same.
var errNotGiven = errors.New("no such event given")

// mayPass reports whether a failure to fetch from another server may
// pass: no answer, a 5xx, 408 or 429; not a 4xx, nor errNotGiven.
func mayPass(err error) bool {
	var h gomatrix.HTTPError
	if errors.As(err, &h) {
		return h.Code >= 500 || h.Code == http.StatusRequestTimeout || h.Code == http.StatusTooManyRequests
	}
	return !errors.Is(err, errNotGiven)
}

// describe is err for a log line: another server's error answer as its
// status and the start of its body, not the body's bytes one by one.
func describe(err error) string {
	var h gomatrix.HTTPError
	if errors.As(err, &h) {
		return fmt.Sprintf("HTTP %d: %.200s", h.Code, h.Contents)
	}
	return err.Error()
}

// fetchEvent fetches the event id from origin and checks it.
func (s *Service) fetchEvent(ctx context.Context, origin spec.ServerName, verImpl gomatrixserverlib.IRoomVersion, id string) (gomatrixserverlib.PDU, error) {
	rctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	txn, err := s.fed.Client().GetEvent(rctx, spec.ServerName(s.cfg.ServerName), origin, id)
	if err != nil {
		return nil, err
	}
	for _, raw := range txn.PDUs {
		ev, err := s.verify(ctx, verImpl, raw)
		if err == nil && ev.EventID() == id {
			return ev, nil
		}
	}
	return nil, fmt.Errorf("%w: %s answered no event %s", errNotGiven, origin, id)
}
