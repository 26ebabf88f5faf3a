package actors

import "encoding/json"

// visibility decides which of a room's events one user may see, by the
// room's history visibility in force when each was sent (the spec's
// "History visibility"): "world_readable" and "shared" events, the default,
// to anyone the room lets read at all (view's upto stops a departed member
// at their leave); "invited" events to a user then invited or joined;
// "joined" events to a user then joined. A user always sees their own
// membership event.
type visibility struct {
	all            bool // no event is hidden: the room was never invited or joined
	id             string
	settings, user chain
}

// visibility prepares the decisions for user; it reads nothing until an
// event needs it.
func (r *room) visibility(user string) *visibility {
	hv := r.state[stateKey{"m.room.history_visibility", ""}]
	if hv == nil || (permissive(hv) && hv.prev == nil && hv.PrevID == "") {
		return &visibility{all: true}
	}
	return &visibility{
		id:       user,
		settings: chain{r: r, evs: []*evRecord{hv}},
		user:     chain{r: r, evs: []*evRecord{r.state[stateKey{"m.room.member", user}]}},
	}
}

// sees reports whether the user may see ev.
func (v *visibility) sees(ev *evRecord) bool {
	if v.all || (ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == v.id) {
		return true
	}
	setting := "shared" // before any history_visibility event
	if ev.Pos > 0 {
		if hv := v.settings.at(ev.Pos - 1); hv != nil {
			setting = historySetting(hv)
		}
	}
	if setting != "joined" && setting != "invited" {
		return true
	}
	m := v.user.at(ev.Pos) // after ev: one's own join counts
	if m == nil {
		return false
	}
	switch membershipOf(m) {
	case "join":
		return true
	case "invite":
		return setting == "invited"
	}
	return false
}

// permissive reports whether a history_visibility event hides nothing.
func permissive(hv *evRecord) bool {
	s := historySetting(hv)
	return s != "joined" && s != "invited"
}

// historySetting is a history_visibility event's setting.
func historySetting(hv *evRecord) string {
	var c struct {
		HistoryVisibility string `json:"history_visibility"`
	}
	_ = json.Unmarshal(hv.Content, &c)
	return c.HistoryVisibility
}

// chain is one state event and the ones it replaced, newest first, read
// back from storage only as far as asked.
type chain struct {
	r    *room
	evs  []*evRecord
	done bool
}

// at is the chain's event in force after position pos, or nil.
func (c *chain) at(pos uint64) *evRecord {
	for _, ev := range c.evs {
		if ev == nil {
			return nil
		}
		if ev.Pos <= pos {
			return ev
		}
	}
	for !c.done {
		last := c.evs[len(c.evs)-1]
		prev := c.r.before(last, last.Pos)
		if prev == nil {
			c.done = true
			break
		}
		c.evs = append(c.evs, prev)
		if prev.Pos <= pos {
			return prev
		}
	}
	return nil
}
