package actors

import (
	"encoding/json"
	"sort"
	"strings"
)

// searchMembers answers SearchMembers: the joined members whose displayname
// in this room matches the term, with their room profile. Only a joined
// searcher gets an answer (an empty one otherwise), so a room-specific name
// never reaches anyone outside the room.
func (r *room) searchMembers(m *SearchMembers) *MemberMatches {
	out := &MemberMatches{}
	term := strings.ToLower(strings.TrimSpace(m.Term))
	if term == "" || r.membership(m.UserId) != "join" {
		return out
	}
	type hit struct {
		e     *DirectoryEntry
		score int
	}
	var hits []hit
	for k, ev := range r.state {
		if k.typ != "m.room.member" {
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
			hits = append(hits, hit{&DirectoryEntry{UserId: k.key, Displayname: name, AvatarUrl: av}, score})
		}
	}
	sort.Slice(hits, func(i, j int) bool {
		if hits[i].score != hits[j].score {
			return hits[i].score > hits[j].score
		}
		return hits[i].e.UserId < hits[j].e.UserId
	})
	limit := int(m.Limit)
	if limit <= 0 {
		limit = 50
	}
	for i, h := range hits {
		if i == limit {
			out.Limited = true
			break
		}
		out.Entries = append(out.Entries, h.e)
	}
	return out
}
