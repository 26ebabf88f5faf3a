package pdu

import "encoding/base64"

// rules are what a room version changes in how a PDU is built, hashed and
// redacted.
type rules struct {
	// idEncoding encodes the reference hash into the event ID: standard
	// base64 in version 3, URL-safe from 4 (both unpadded).
	idEncoding *base64.Encoding
	// redactionKeepsOrigin: the redaction algorithm keeps the top-level
	// origin and prev_state (before version 11).
	redactionKeepsOrigin bool
	// redactsInContent: an m.room.redaction names the event it redacts in
	// its content, not at the top level (from version 11).
	redactsInContent bool
	// createHasNoRoomID: the create event has no room_id, the room's ID
	// being derived from its event ID (from version 12).
	createHasNoRoomID bool
	// content lists, per event type, the content keys redaction keeps.
	content map[string]kept
}

// kept is what redaction keeps of an event type's content: the keys
// listed, or all of it.
type kept struct {
	keys []string
	all  bool
}

// keptContent returns what redaction keeps of the content of an event of
// type typ: nothing for a type the version does not list.
func (r *rules) keptContent(typ string) kept {
	return r.content[typ]
}

// powerLevelKeys are the keys of m.room.power_levels that redaction keeps
// before version 11.
var powerLevelKeys = []string{"ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"}

// The redaction algorithms' content rules, as gomatrixserverlib has them:
// v3 to v5, then v6 (m.room.aliases no longer kept), v8 (join rules keep
// allow), v9 (members keep join_authorised_via_users_server) and v11
// (create keeps all, power levels keep invite, redactions keep redacts).
// The spec's version 11 also keeps third_party_invite.signed of a member
// event; gomatrixserverlib does not, and neither do these tables, so that
// the PDUs built here are the library's.
var (
	contentV3 = map[string]kept{
		"m.room.member":             {keys: []string{"membership"}},
		"m.room.create":             {keys: []string{"creator"}},
		"m.room.join_rules":         {keys: []string{"join_rule"}},
		"m.room.power_levels":       {keys: powerLevelKeys},
		"m.room.aliases":            {keys: []string{"aliases"}},
		"m.room.history_visibility": {keys: []string{"history_visibility"}},
	}
	contentV6 = map[string]kept{
		"m.room.member":             {keys: []string{"membership"}},
		"m.room.create":             {keys: []string{"creator"}},
		"m.room.join_rules":         {keys: []string{"join_rule"}},
		"m.room.power_levels":       {keys: powerLevelKeys},
		"m.room.history_visibility": {keys: []string{"history_visibility"}},
	}
	contentV8 = map[string]kept{
		"m.room.member":             {keys: []string{"membership"}},
		"m.room.create":             {keys: []string{"creator"}},
		"m.room.join_rules":         {keys: []string{"join_rule", "allow"}},
		"m.room.power_levels":       {keys: powerLevelKeys},
		"m.room.history_visibility": {keys: []string{"history_visibility"}},
	}
	contentV9 = map[string]kept{
		"m.room.member":             {keys: []string{"membership", "join_authorised_via_users_server"}},
		"m.room.create":             {keys: []string{"creator"}},
		"m.room.join_rules":         {keys: []string{"join_rule", "allow"}},
		"m.room.power_levels":       {keys: powerLevelKeys},
		"m.room.history_visibility": {keys: []string{"history_visibility"}},
	}
	contentV11 = map[string]kept{
		"m.room.member":             {keys: []string{"membership", "join_authorised_via_users_server"}},
		"m.room.create":             {all: true},
		"m.room.join_rules":         {keys: []string{"join_rule", "allow"}},
		"m.room.power_levels":       {keys: append(powerLevelKeys[:len(powerLevelKeys):len(powerLevelKeys)], "invite")},
		"m.room.history_visibility": {keys: []string{"history_visibility"}},
		"m.room.redaction":          {keys: []string{"redacts"}},
	}
)

var (
	v3  = rules{idEncoding: base64.RawStdEncoding, redactionKeepsOrigin: true, content: contentV3}
	v4  = rules{idEncoding: base64.RawURLEncoding, redactionKeepsOrigin: true, content: contentV3}
	v6  = rules{idEncoding: base64.RawURLEncoding, redactionKeepsOrigin: true, content: contentV6}
	v8  = rules{idEncoding: base64.RawURLEncoding, redactionKeepsOrigin: true, content: contentV8}
	v9  = rules{idEncoding: base64.RawURLEncoding, redactionKeepsOrigin: true, content: contentV9}
	v11 = rules{idEncoding: base64.RawURLEncoding, redactsInContent: true, content: contentV11}
	v12 = rules{idEncoding: base64.RawURLEncoding, redactsInContent: true, createHasNoRoomID: true, content: contentV11}
)

// rulesFor returns the rules of room version v, nil for a version this
// package does not build.
func rulesFor(v string) *rules {
	switch v {
	case "3":
		return &v3
	case "4", "5":
		return &v4
	case "6", "7":
		return &v6
	case "8":
		return &v8
	case "9", "10":
		return &v9
	case "11":
		return &v11
	case "12":
		return &v12
	}
	return nil
}
