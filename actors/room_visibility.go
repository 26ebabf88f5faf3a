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
	all bool // no event is hidden: the room was never invited or joined
	r   *room
	id  string
	hv  *evRecord // the history_visibility event in force now
}

// visibility prepares the decisions for user; it reads nothing until an
// event needs it.
func (r *room) visibility(user string) *visibility {
	hv := r.state[stateKey{"m.room.history_visibility", ""}]
	if hv == nil || (permissive(hv) && hv.prev == nil && hv.PrevID == "") {
		return &visibility{all: true}
	}
	return &visibility{r: r, id: user, hv: hv}
}

// sees reports whether the user may see ev.
func (v *visibility) sees(ev *evRecord) bool {
	if v.all || (ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == v.id) {
		return true
	}
	setting := "shared" // before any history_visibility event
	if hv := v.r.before(v.hv, ev.Pos); hv != nil {
		setting = historySetting(hv)
	}
	if setting != "joined" && setting != "invited" {
		return true
	}
	switch v.r.membershipAt(v.id, ev.Pos) { // after ev: one's own join counts
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
