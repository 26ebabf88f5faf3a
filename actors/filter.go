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
