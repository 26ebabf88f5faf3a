package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	"persona/actors"
	"persona/wire"
)

const (
	maxSyncTimeout = 60 * time.Second
	syncParallel   = 16   // room queries in flight per /sync
	maxSyncLimit   = 1000 // timeline events per room at most
)

// syncParams are a /sync request's parsed query.
type syncParams struct {
	since        actors.SyncToken // zero: initial sync
	timeout      time.Duration
	fullState    bool
	limit        uint32
	roomFilter   []byte             // the filter's "room" part, passed on to rooms
	filter       string             // the filter parameter: inline JSON or a filter id
	includeLeave bool               // room.include_leave: left rooms in initial syncs too
	setPresence  string             // set_presence: online, offline or unavailable
	presence     actors.EventFilter // the filter's "presence" part
}

// parseSyncParams reads /sync's query, for a node with partitions
// partitions. The filter (inline JSON or a stored filter's id) is resolved
// by the handler: see readFilter.
func parseSyncParams(r *http.Request, partitions int) (*syncParams, error) {
	q := r.URL.Query()
	p := &syncParams{limit: 10}
	var err error
	if p.since, err = actors.ParseSyncToken(q.Get("since"), partitions); err != nil {
		return nil, invalidParam("Invalid since token.")
	}
	if t := q.Get("timeout"); t != "" {
		ms, err := strconv.ParseInt(t, 10, 64)
		if err != nil || ms < 0 {
			return nil, invalidParam("timeout must be a non-negative integer.")
		}
		p.timeout = min(time.Duration(min(ms, 1<<40))*time.Millisecond, maxSyncTimeout)
	}
	switch q.Get("full_state") {
	case "", "false":
	case "true":
		p.fullState = true
	default:
		return nil, invalidParam("full_state must be true or false.")
	}
	p.filter = q.Get("filter")
	switch v := q.Get("set_presence"); v {
	case "", "online", "offline", "unavailable":
		p.setPresence = v
	default:
		return nil, invalidParam("set_presence must be online, offline or unavailable.")
	}
	return p, nil
}

// readFilter takes room.timeline.limit and the room part of a sync filter.
func (p *syncParams) readFilter(f []byte) error {
	bad := invalidParam("Invalid filter.")
	var filter struct {
		Room     json.RawMessage `json:"room"`
		Presence json.RawMessage `json:"presence"`
	}
	var leave struct {
		Room struct {
			IncludeLeave bool `json:"include_leave"`
		} `json:"room"`
	}
	_ = json.Unmarshal(f, &leave)
	p.includeLeave = leave.Room.IncludeLeave
	if err := json.Unmarshal(f, &filter); err != nil {
		return bad
	}
	if len(filter.Presence) > 0 && jsonKind(filter.Presence) != 'n' {
		var err error
		if p.presence, err = actors.ParseEventFilter(filter.Presence); err != nil || jsonKind(filter.Presence) != '{' {
			return bad
		}
	}
	if len(filter.Room) == 0 || jsonKind(filter.Room) == 'n' {
		return nil
	}
	var room struct {
		Timeline *struct {
			Limit *int64 `json:"limit"`
		} `json:"timeline"`
	}
	if jsonKind(filter.Room) != '{' || json.Unmarshal(filter.Room, &room) != nil {
		return bad
	}
	if room.Timeline != nil && room.Timeline.Limit != nil {
		if *room.Timeline.Limit < 0 {
			return bad
		}
		p.limit = uint32(min(*room.Timeline.Limit, maxSyncLimit))
	}
	p.roomFilter = filter.Room
	return nil
}

// sync answers /sync. It subscribes before it reads, so an event committed
// while the answer is built wakes it; with nothing to report it waits for
// such an event (or the timeout) and builds again.
func (s *Server) sync(r *http.Request, sess *session) (any, error) {
	p, err := parseSyncParams(r, s.cfg.Actors.Partitions)
	if err != nil {
		return nil, err
	}
	if p.filter != "" {
		f, err := s.loadFilter(r, sess, p.filter)
		if err == nil {
			err = p.readFilter(f)
		}
		if err != nil {
			return nil, err
		}
	}
	ctx, user := r.Context(), string(sess.user)
	if done, err := s.host.Syncing(user, p.setPresence); err == nil {
		defer done()
	}
	deadline := time.Now().Add(p.timeout)
	for {
		wake, cancel := s.host.Subscribe(user)
		resp, err := s.buildSync(ctx, sess, p)
		wait := time.Until(deadline)
		if err != nil || !resp.empty() || p.since.IsZero() || p.fullState || wait <= 0 {
			cancel()
			return resp, err
		}
		timer := time.NewTimer(wait)
		select {
		case <-wake:
		case <-timer.C:
		case <-ctx.Done():
		}
		timer.Stop()
		cancel()
		if time.Now().After(deadline) || ctx.Err() != nil {
			return resp, nil // nothing new: the same empty answer
		}
	}
}

type eventList struct {
	Events []any `json:"events"`
}

type timeline struct {
	Events    []json.RawMessage `json:"events"`
	Limited   bool              `json:"limited"`
	PrevBatch string            `json:"prev_batch,omitempty"`
}

type joinedRoom struct {
	Timeline    timeline          `json:"timeline"`
	State       eventList         `json:"state"`
	Ephemeral   eventList         `json:"ephemeral"`
	AccountData eventList         `json:"account_data"`
	Summary     map[string]uint64 `json:"summary"`
	Unread      map[string]int    `json:"unread_notifications"`
}

type leftRoom struct {
	Timeline    timeline  `json:"timeline"`
	State       eventList `json:"state"`
	AccountData eventList `json:"account_data"`
}

type invitedRoom struct {
	InviteState eventList `json:"invite_state"`
}

type syncResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join   map[string]*joinedRoom  `json:"join"`
		Invite map[string]*invitedRoom `json:"invite"`
		Leave  map[string]*leftRoom    `json:"leave"`
	} `json:"rooms"`
	Presence    eventList `json:"presence"`
	AccountData eventList `json:"account_data"`
	ToDevice    eventList `json:"to_device"`
	DeviceLists struct {
		Changed []string `json:"changed"`
		Left    []string `json:"left"`
	} `json:"device_lists"`
	OneTimeKeys map[string]int `json:"device_one_time_keys_count"`
}

func newSyncResponse(pos actors.SyncToken) *syncResponse {
	resp := &syncResponse{NextBatch: pos.String(), OneTimeKeys: map[string]int{}}
	resp.Rooms.Join, resp.Rooms.Invite, resp.Rooms.Leave = map[string]*joinedRoom{}, map[string]*invitedRoom{}, map[string]*leftRoom{}
	resp.Presence.Events, resp.AccountData.Events, resp.ToDevice.Events = []any{}, []any{}, []any{}
	resp.DeviceLists.Changed, resp.DeviceLists.Left = []string{}, []string{}
	return resp
}

func (r *syncResponse) empty() bool {
	return len(r.Rooms.Join)+len(r.Rooms.Invite)+len(r.Rooms.Leave)+len(r.Presence.Events) == 0
}

// buildSync builds one answer covering, in each partition's stream, the
// positions (since, pos], pos being the position when it starts (never
// below since, which another node may have given): every room read is cut
// at its partition's pos (upto), so the next sync, from pos, neither
// repeats nor misses an event. Memberships after pos wait for that next
// sync too, as do the rooms of a partition whose position this node does
// not know yet (0: its owner has told it nothing since it started).
func (s *Server) buildSync(ctx context.Context, sess *session, p *syncParams) (*syncResponse, error) {
	user := string(sess.user)
	pos, err := s.host.StreamPosition(ctx)
	if err != nil {
		return nil, err
	}
	for i := range pos.Parts {
		pos.Parts[i] = max(pos.Parts[i], p.since.Part(i))
	}
	pos.Presence = max(pos.Presence, p.since.Presence)
	rooms, err := askAs[*wire.RoomsReply](ctx, s, actors.KindUser, user, &wire.GetRooms{UserId: user})
	if err != nil {
		return nil, err
	}
	s.host.CapUnseenMemberships(user, rooms.Rooms, p.since, pos)
	// An incremental sync asks only the joined rooms with events since the
	// token, which the stream knows, unless presence changed for too many
	// users to check one by one whether they share a room (sharesRoom):
	// presence is shown for the members of the rooms asked.
	var presenceChanged []string
	if !p.since.IsZero() {
		presenceChanged = s.host.PresenceChangedSince(p.since.Presence)
	}
	skip, skipped := !p.since.IsZero() && !p.fullState && len(presenceChanged) <= maxPresenceChecks, false
	var memberships []*wire.RoomMembership
	var reqs []*wire.RoomSync
	for _, m := range rooms.Rooms {
		part := s.host.Partition(m.RoomId)
		since, upto := p.since.Part(part), pos.Parts[part]
		q := &wire.RoomSync{RoomId: m.RoomId, UserId: user, Since: since, Limit: p.limit, FullState: p.fullState,
			Upto: upto, DeviceId: sess.device, FilterJson: p.roomFilter}
		switch {
		case upto == 0 || m.Stream > upto:
			continue
		case m.Membership == "join":
			if m.Stream > since {
				q.Since = 0 // joined since the last sync: the whole room
			} else if skip && !s.host.RoomChangedSince(m.RoomId, since) {
				skipped = true
				continue
			}
		case m.Membership == "invite" && m.Stream > since:
			q.Since, q.FullState = 0, true
		case (m.Membership == "leave" || m.Membership == "ban") && m.Stream > since && (!p.since.IsZero() || ((p.fullState || p.includeLeave) && !m.Forgotten)):
			q.Upto = m.Stream
		default:
			continue
		}
		memberships, reqs = append(memberships, m), append(reqs, q)
	}
	replies, err := s.roomSyncs(ctx, reqs)
	if err != nil {
		return nil, err
	}
	resp := newSyncResponse(pos)
	seen := map[string]bool{user: true}
	newcomers := map[string]bool{} // joined a shared room since the last sync
	for i, reply := range replies {
		if reply == nil {
			continue
		}
		room, initial := memberships[i].RoomId, reqs[i].Since == 0 || p.fullState
		switch memberships[i].Membership {
		case "join":
			for _, u := range reply.Joined {
				seen[u] = true
			}
			if !p.since.IsZero() {
				for u := range joinsIn(reply) {
					newcomers[u] = true
				}
			}
			if initial || len(reply.Timeline) > 0 || len(reply.State) > 0 {
				resp.Rooms.Join[room] = joinedSection(reply)
			}
		case "invite":
			resp.Rooms.Invite[room] = &invitedRoom{InviteState: eventList{Events: stripped(reply.State, reply.Timeline)}}
		default:
			resp.Rooms.Leave[room] = &leftRoom{Timeline: timelineOf(reply), State: rawList(reply.State), AccountData: rawList(nil)}
		}
	}
	if skipped {
		for _, u := range presenceChanged {
			if !seen[u] && s.sharesRoom(ctx, u, rooms.Rooms) {
				seen[u] = true
			}
		}
	}
	users := make([]string, 0, len(seen))
	for u := range seen {
		users = append(users, u)
	}
	for _, pr := range s.host.PresenceOf(users, p.since.Presence) {
		if pr.Stream <= pos.Presence {
			delete(newcomers, pr.UserID)
			resp.Presence.Events = append(resp.Presence.Events, map[string]any{
				"type": "m.presence", "sender": pr.UserID, "content": presenceContent(pr, true)})
		}
	}
	for u := range newcomers { // new members' presence, even if it did not change
		if u != user {
			resp.Presence.Events = append(resp.Presence.Events, map[string]any{
				"type": "m.presence", "sender": u, "content": presenceContent(s.host.GetPresence(u), true)})
		}
	}
	resp.Presence.Events = filterPresence(p.presence, resp.Presence.Events)
	return resp, nil
}

// filterPresence keeps the presence events the filter allows, at most its
// limit.
func filterPresence(f actors.EventFilter, events []any) []any {
	kept := events[:0]
	for _, e := range events {
		ev := e.(map[string]any)
		if f.Allows("m.presence", ev["sender"].(string)) && (f.Limit() == 0 || len(kept) < f.Limit()) {
			kept = append(kept, e)
		}
	}
	return kept
}

// maxPresenceChecks is how many presence changes an incremental sync checks
// one by one (sharesRoom) rather than asking every joined room.
const maxPresenceChecks = 64

// sharesRoom reports whether other is joined to one of the rooms mine joins
// (other's actor knows its rooms). A remote user, which has no actor here,
// shares none.
func (s *Server) sharesRoom(ctx context.Context, other string, mine []*wire.RoomMembership) bool {
	if _, server, err := parseUserID(other); err != nil || server != s.cfg.ServerName {
		return false
	}
	theirs, err := askAs[*wire.RoomsReply](ctx, s, actors.KindUser, other, &wire.GetRooms{UserId: other})
	if err != nil {
		return false
	}
	joined := map[string]bool{}
	for _, m := range theirs.Rooms {
		if m.Membership == "join" {
			joined[m.RoomId] = true
		}
	}
	for _, m := range mine {
		if m.Membership == "join" && joined[m.RoomId] {
			return true
		}
	}
	return false
}

// roomSyncs asks the rooms at most syncParallel at a time. A room that
// answers a client error for this user (it no longer counts them as a
// member, say) is left out as nil; any other failure fails the sync, since
// skipping a room would lose its events.
func (s *Server) roomSyncs(ctx context.Context, reqs []*wire.RoomSync) ([]*wire.RoomSyncReply, error) {
	out := make([]*wire.RoomSyncReply, len(reqs))
	errs := make([]error, len(reqs))
	sem := make(chan struct{}, syncParallel)
	var wg sync.WaitGroup
	for i, q := range reqs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			out[i], errs[i] = askAs[*wire.RoomSyncReply](ctx, s, actors.KindRoom, q.RoomId, q)
		})
	}
	wg.Wait()
	for i, err := range errs {
		switch {
		case err == nil:
		case answer(err).Status < 500:
			s.log.Warn("room left out of sync", "room", reqs[i].RoomId, "user", reqs[i].UserId, "err", err)
		default:
			return nil, err
		}
	}
	return out, nil
}

func rawList(evs [][]byte) eventList {
	l := eventList{Events: make([]any, len(evs))}
	for i, e := range evs {
		l.Events[i] = json.RawMessage(e)
	}
	return l
}

func timelineOf(reply *wire.RoomSyncReply) timeline {
	return timeline{Events: rawEvents(reply.Timeline), Limited: reply.Limited, PrevBatch: reply.PrevBatch}
}

func joinedSection(reply *wire.RoomSyncReply) *joinedRoom {
	return &joinedRoom{
		Timeline: timelineOf(reply), State: rawList(reply.State),
		Ephemeral: rawList(nil), AccountData: rawList(nil),
		Summary: map[string]uint64{"m.joined_member_count": reply.JoinedCount, "m.invited_member_count": reply.InvitedCount},
		Unread:  map[string]int{},
	}
}

// stripped reduces the state events among evs to the stripped state an
// invitee sees ({type, state_key, content, sender}), the latest per
// (type, state_key), in the order first seen.
func stripped(lists ...[][]byte) []any {
	type key struct{ typ, stateKey string }
	index := map[key]int{}
	var out []any
	for _, evs := range lists {
		for _, raw := range evs {
			var ev struct {
				Type     string          `json:"type"`
				StateKey *string         `json:"state_key"`
				Content  json.RawMessage `json:"content"`
				Sender   string          `json:"sender"`
			}
			if json.Unmarshal(raw, &ev) != nil || ev.StateKey == nil {
				continue
			}
			if jsonKind(ev.Content) != '{' {
				ev.Content = json.RawMessage("{}")
			}
			e := map[string]any{"type": ev.Type, "state_key": *ev.StateKey, "content": ev.Content, "sender": ev.Sender}
			k := key{ev.Type, *ev.StateKey}
			if i, ok := index[k]; ok {
				out[i] = e
				continue
			}
			index[k] = len(out)
			out = append(out, e)
		}
	}
	if out == nil {
		out = []any{}
	}
	return out
}

// joinsIn is the users whose join appears in a room's part of a sync.
func joinsIn(reply *wire.RoomSyncReply) map[string]bool {
	out := map[string]bool{}
	for _, raw := range append(append([][]byte{}, reply.Timeline...), reply.State...) {
		var ev struct {
			Type     string `json:"type"`
			StateKey string `json:"state_key"`
			Content  struct {
				Membership string `json:"membership"`
			} `json:"content"`
		}
		if json.Unmarshal(raw, &ev) == nil && ev.Type == "m.room.member" && ev.Content.Membership == "join" {
			out[ev.StateKey] = true
		}
	}
	return out
}
