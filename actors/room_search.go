package actors

import (
	"encoding/json"
	"strings"

	"persona/wire"
)

// searchMembers answers SearchMembers: the joined members whose displayname
// in this room matches the term, with their room profile. Only a joined
// searcher gets an answer (an empty one otherwise), so a room-specific name
// never reaches anyone outside the room.
func (r *room) searchMembers(m *wire.SearchMembers) *wire.MemberMatches {
	out := &wire.MemberMatches{}
	term := strings.ToLower(strings.TrimSpace(m.Term))
	if term == "" || r.membership(m.UserId) != "join" {
		return out
	}
	var hits []searchHit
	for k, ev := range r.state {
		if k.typ != "m.room.member" {
			continue
		}
		if ev = r.before(ev, r.durable); ev == nil {
			continue
		}
		var c struct {
			Membership  string `json:"membership"`
			Displayname any    `json:"displayname"`
			AvatarURL   any    `json:"avatar_url"`
		}
		if json.Unmarshal(ev.Content, &c) != nil || c.Membership != "join" {
			continue
		}
		name, _ := c.Displayname.(string)
		if score := nameScore(name, term); score > 0 {
			av, _ := c.AvatarURL.(string)
			hits = append(hits, searchHit{&wire.DirectoryEntry{UserId: k.key, Displayname: name, AvatarUrl: av}, score})
		}
	}
	out.Entries, out.Limited = bestHits(hits, m.Limit)
	return out
}
