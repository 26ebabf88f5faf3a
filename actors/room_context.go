package actors

import "persona/wire"

// getContext answers /context: the event, up to limit/2 visible events on
// each side (filtered), tokens to page on from either end, and the state
// at the last event returned.
func (r *room) getContext(m *wire.GetContext) *wire.ContextReply {
	notFound := &wire.ContextReply{Error: notFound(wire.Error_EVENT, "Event not found.")}
	upto, e := r.view(m.UserId)
	if e != nil {
		return &wire.ContextReply{Error: e}
	}
	ev := r.eventByID(m.EventId)
	v := r.visibility(m.UserId)
	if ev == nil || ev.Pos > upto || !v.sees(ev) {
		return notFound
	}
	f, err := parseFilter(m.FilterJson)
	if err != nil {
		return &wire.ContextReply{Error: malformed(wire.Error_FILTER, "Bad filter.")}
	}
	limit := int(m.Limit)
	if m.Limit == 0 {
		limit = 10
	}
	before, after := limit/2, limit-limit/2
	out := &wire.ContextReply{Event: r.clientEvent(ev, m.DeviceId, m.UserId), Start: posToken(ev.Pos), End: posToken(ev.Pos + 1)}
	if before > 0 && ev.Pos > 0 {
		n := 0
		_ = r.scan(ev.Pos-1, true, func(x *evRecord) bool {
			if n == before {
				return false
			}
			n++
			out.Start = posToken(x.Pos)
			if f.matches(x) && v.sees(x) {
				out.EventsBefore = append(out.EventsBefore, r.clientEvent(x, m.DeviceId, m.UserId))
			}
			return true
		})
	}
	last := ev.Pos
	if after > 0 {
		n := 0
		_ = r.scan(ev.Pos+1, false, func(x *evRecord) bool {
			if n == after || x.Pos > upto {
				return false
			}
			n++
			last = x.Pos
			out.End = posToken(x.Pos + 1)
			if f.matches(x) && v.sees(x) {
				out.EventsAfter = append(out.EventsAfter, r.clientEvent(x, m.DeviceId, m.UserId))
			}
			return true
		})
	}
	for _, s := range r.stateAt(last) {
		out.State = append(out.State, r.clientEvent(s, "", ""))
	}
	return out
}
