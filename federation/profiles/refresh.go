package profiles

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
)

// Between two queries, a remote user's member events refresh the cached
// display name and avatar. A member event shows the name the user has in
// that room, which is the global one unless the user set one for the room,
// and nothing in the event says which. The rule, per field: an event takes
// the field's new value into the cache when the room's previous member
// event of the user carried the cached value (the room showed the global
// profile) and the new one differs. A room that showed a value of its own
// changes nothing, so later changes of a per-room name never reach the
// cache; a global rename reaches it from the first room that showed the
// old name, and the events of the other rooms then carry the value the
// cache holds. What the rule cannot tell apart is a first per-room name
// set in a room that showed the global one: it is taken, and so every
// value taken from a member event is checked by a query at the first
// lookup VerifyAfter later (one query per user, however many events).
// Only a user the cache holds is refreshed: an event does not make an
// entry, since it lacks the other fields.
//
// A server that sends profile update EDUs (MSC4259) tells every change of
// a profile, in order, and what it tells is the global profile. Once one
// has come for a user (since the last query), the user's member events are
// not heeded: they add nothing, may have a per-room name, and may arrive
// after a newer update.

// memberFields are the profile fields a member event carries.
var memberFields = []string{"displayname", "avatar_url"}

// Cached reports whether the cache holds an entry for user, fresh or not:
// whether MemberChanged may have anything to do.
func (c *Cache) Cached(user string) bool {
	e, err := c.read(user)
	return err == nil && e != nil
}

// MemberChanged refreshes user's cached display name and avatar from a
// member event of the user's own server that kept the user joined: prev
// is the content of the user's member event in that room before it, next
// the new event's content (the rule above). It reports whether the cache
// changed.
func (c *Cache) MemberChanged(user string, prev, next json.RawMessage) (bool, error) {
	var before, after map[string]json.RawMessage
	if json.Unmarshal(prev, &before) != nil || json.Unmarshal(next, &after) != nil {
		return false, nil
	}
	c.writing.Lock()
	defer c.writing.Unlock()
	e, err := c.read(user)
	if err != nil || e == nil || e.Updates {
		return false, err
	}
	changed := false
	for _, f := range memberFields {
		was, now, cached := value(before[f]), value(after[f]), value(e.Fields[f])
		if !reflect.DeepEqual(was, cached) || reflect.DeepEqual(now, cached) {
			continue
		}
		if _, ok := now.(string); now != nil && !ok {
			continue // not a value the field may hold
		}
		if e.Fields == nil {
			e.Fields = map[string]json.RawMessage{}
		}
		if now == nil {
			delete(e.Fields, f)
		} else {
			e.Fields[f] = after[f]
		}
		changed = true
	}
	if !changed {
		return false, nil
	}
	if check := c.opts.Now().Add(c.opts.VerifyAfter).UnixMilli(); e.Check == 0 || check < e.Check {
		e.Check = check
	}
	if err := c.write(user, e); err != nil {
		return false, err
	}
	c.opts.Metrics.RemoteProfileUpdate("member_event")
	return true, nil
}

// value decodes a field's JSON value; an absent field and null are nil.
func value(raw json.RawMessage) any {
	var v any
	if len(raw) == 0 || json.Unmarshal(raw, &v) != nil {
		return nil
	}
	return v
}

// Updated applies a profile update of user's own server (MSC4259's EDU)
// to user's cached profile: each field of fields takes its value, null
// removes it, fields left out are unchanged; from then on the user's
// member events are not heeded (above). A user the cache does not hold is
// left alone, as is an update that would make the profile larger than the
// spec allows or give displayname or avatar_url a value that is not a
// string. It reports whether the profile changed.
func (c *Cache) Updated(user string, fields map[string]json.RawMessage) (bool, error) {
	c.writing.Lock()
	defer c.writing.Unlock()
	e, err := c.read(user)
	if err != nil || e == nil {
		return false, err
	}
	next := maps.Clone(e.Fields)
	if next == nil {
		next = map[string]json.RawMessage{}
	}
	for f, raw := range fields {
		v := value(raw)
		if _, ok := v.(string); v != nil && !ok && slices.Contains(memberFields, f) {
			return false, nil
		}
		if v == nil {
			delete(next, f)
		} else {
			next[f] = raw
		}
	}
	b, _ := json.Marshal(next)
	if len(b) > maxProfileBytes {
		return false, nil
	}
	changed := string(b) != string(e.json())
	if !changed && e.Updates {
		return false, nil
	}
	e.Fields, e.Updates = next, true
	if err := c.write(user, e); err != nil {
		return false, err
	}
	if changed {
		c.opts.Metrics.RemoteProfileUpdate("edu")
	}
	return changed, nil
}
