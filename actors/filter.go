package actors

import (
	"encoding/json"
	"path"
)

// eventFilter is the part of a Matrix RoomEventFilter / StateFilter the
// room applies: types, senders and their negations (with * wildcards),
// limit, and lazy-loading of members.
type eventFilter struct {
	Limit           int       `json:"limit"`
	Types           *[]string `json:"types"`
	NotTypes        []string  `json:"not_types"`
	Senders         *[]string `json:"senders"`
	NotSenders      []string  `json:"not_senders"`
	LazyLoadMembers bool      `json:"lazy_load_members"`
	ContainsURL     *bool     `json:"contains_url"`
}

// roomFilter is the "room" part of a sync filter.
type roomFilter struct {
	Timeline eventFilter `json:"timeline"`
	State    eventFilter `json:"state"`
}

// EventFilter is a Matrix EventFilter (types, senders, their negations with
// * wildcards, limit) for events outside rooms, such as /sync's presence.
type EventFilter struct{ f eventFilter }

// ParseEventFilter reads an EventFilter; empty raw lets everything through.
func ParseEventFilter(raw []byte) (EventFilter, error) {
	f, err := parseFilter(raw)
	f.ContainsURL, f.LazyLoadMembers = nil, false
	return EventFilter{f}, err
}

// Allows reports whether an event of type typ from sender passes.
func (f EventFilter) Allows(typ, sender string) bool {
	return f.f.matches(&evRecord{Type: typ, Sender: sender})
}

// Limit is the most events to return; 0 for no limit.
func (f EventFilter) Limit() int { return max(0, f.f.Limit) }

func parseFilter(raw []byte) (eventFilter, error) {
	var f eventFilter
	if len(raw) == 0 {
		return f, nil
	}
	return f, json.Unmarshal(raw, &f)
}

func parseRoomFilter(raw []byte) (roomFilter, error) {
	var f roomFilter
	if len(raw) == 0 {
		return f, nil
	}
	return f, json.Unmarshal(raw, &f)
}

func (f eventFilter) matches(ev *evRecord) bool {
	match := func(patterns []string, s string) bool {
		for _, p := range patterns {
			if ok, _ := path.Match(p, s); ok || p == s {
				return true
			}
		}
		return false
	}
	if match(f.NotTypes, ev.Type) || match(f.NotSenders, ev.Sender) {
		return false
	}
	if f.Types != nil && !match(*f.Types, ev.Type) {
		return false
	}
	if f.Senders != nil && !match(*f.Senders, ev.Sender) {
		return false
	}
	if f.ContainsURL != nil {
		var c struct {
			URL *string `json:"url"`
		}
		_ = json.Unmarshal(ev.Content, &c)
		if (c.URL != nil) != *f.ContainsURL {
			return false
		}
	}
	return true
}
