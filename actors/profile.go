package actors

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/asynkron/protoactor-go/actor"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/id"

	"persona/internal/mxid"
	"persona/storage"
	"persona/wire"
)

// Profile limits from the spec (MSC4133): the whole profile in canonical JSON,
// and one key name.
const (
	MaxProfileBytes = 65536
	MaxKeyBytes     = 255
)

// FieldLimits caps displayname and avatar_url, in characters, so that a member
// event carrying them fits the 64 KiB event limit.
type FieldLimits struct {
	Displayname int
	AvatarURL   int
}

// keyGrammar is the key grammar Synapse accepts, so that profiles move
// between servers; displayname and avatar_url match it too.
var keyGrammar = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,254}$`)

// ValidateKey checks a profile key name.
func ValidateKey(key string) *wire.Error {
	if len(key) > MaxKeyBytes {
		return tooLarge(wire.Error_KEY, fmt.Sprintf("Key names are limited to %d bytes.", MaxKeyBytes))
	}
	if !keyGrammar.MatchString(key) {
		return badValue(wire.Error_KEY, "Invalid profile key.")
	}
	return nil
}

// ValidateValue checks the JSON value of a profile field and returns it in
// canonical JSON.
func ValidateValue(key string, value json.RawMessage, lim FieldLimits) (json.RawMessage, *wire.Error) {
	invalid := func(f string, a ...any) (json.RawMessage, *wire.Error) {
		return nil, badValue(wire.Error_FIELD, fmt.Sprintf(f, a...))
	}
	canon := bytes.Clone(value)
	err := canonicaljson.Canonicalize((*json.RawMessage)(&canon))
	// The canonicaliser mangles some valid input (lone surrogates): check its output too.
	if err != nil || !json.Valid(value) || !json.Valid(canon) {
		return nil, malformed(wire.Error_FIELD, "Value is not valid JSON.")
	}
	switch key {
	case "displayname", "avatar_url", "m.tz":
		var s string
		if json.Unmarshal(canon, &s) != nil {
			return invalid("%s must be a string.", key)
		}
		switch key {
		case "displayname":
			if utf8.RuneCountInString(s) > lim.Displayname {
				return invalid("displayname is too long (at most %d characters).", lim.Displayname)
			}
		case "avatar_url":
			if utf8.RuneCountInString(s) > lim.AvatarURL {
				return invalid("avatar_url is too long (at most %d characters).", lim.AvatarURL)
			}
			if !avatarURL(s) {
				return invalid("avatar_url must be an mxc:// URI.")
			}
		}
	}
	return json.RawMessage(canon), nil
}

// avatarURL accepts an avatar value: a well-formed mxc:// URI, or an opaque
// string that is no URI at all (clients and Complement set such values;
// Synapse stores them). A malformed mxc:// URI or another scheme is refused.
func avatarURL(s string) bool {
	if s == "" || ValidMXC(s) {
		return true
	}
	scheme, _, isURI := strings.Cut(s, ":")
	return !isURI || !uriScheme.MatchString(scheme)
}

var uriScheme = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*$`)

// ValidMXC reports whether s is a well-formed mxc://server/mediaId URI.
func ValidMXC(s string) bool {
	uri, err := id.ParseContentURI(s)
	return err == nil && uri.IsValid() && id.IsValidMediaID(uri.FileID) && mxid.ValidServerName(uri.Homeserver)
}

// ProfileSize is the size of fields as one canonical JSON object. Keys follow
// the key grammar and values are canonical, so it is computed, not encoded.
func ProfileSize(fields map[string]json.RawMessage) int {
	n := 2
	for k, v := range fields {
		n += len(k) + 3 + len(v) + 1 // "k":v,
	}
	if len(fields) > 0 {
		n-- // no comma after the last pair
	}
	return n
}

// clearing reports whether a write of v to key clears the field: an empty
// displayname or avatar_url means none, as in Synapse.
func clearing(key string, v json.RawMessage) bool {
	return (key == "displayname" || key == "avatar_url") && bytes.Equal(v, []byte(`""`))
}

func (u *user) readProfile() *wire.ProfileReply {
	if !u.exists {
		return &wire.ProfileReply{}
	}
	if u.committedJSON == nil {
		u.committedJSON = mustJSON(u.committed.Fields)
	}
	return &wire.ProfileReply{Exists: true, FieldsJson: u.committedJSON, Version: u.committed.Version}
}

func (u *user) setField(ctx actor.Context, m *wire.SetProfileField) {
	fields := maps.Clone(u.profile.Fields)
	if clearing(m.Key, m.ValueJson) {
		delete(fields, m.Key)
	} else {
		fields[m.Key] = m.ValueJson
	}
	u.write(ctx, fields, m.Key, "set", m.Propagate)
}

func (u *user) deleteField(ctx actor.Context, m *wire.DeleteProfileField) {
	fields := maps.Clone(u.profile.Fields)
	delete(fields, m.Key)
	u.write(ctx, fields, m.Key, "delete", m.Propagate)
}

func (u *user) replaceProfile(ctx actor.Context, m *wire.ReplaceProfile) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(m.FieldsJson, &fields); err != nil {
		ctx.Respond(&wire.WriteReply{Error: malformed(wire.Error_PROFILE, "Profile is not a JSON object.")})
		return
	}
	for k, v := range fields {
		if clearing(k, v) {
			delete(fields, k)
		}
	}
	u.write(ctx, fields, "all", "replace", m.Propagate)
}

// write makes fields the new profile version, durably, then answers.
// A write that changes nothing is answered (in order) without a new version.
//
// A write that changes displayname or avatar_url becomes a version for the
// user's rooms too (unless mode is none): stored with the profile in one
// batch, delivered once durable.
func (u *user) write(ctx actor.Context, fields map[string]json.RawMessage, field, op string, mode wire.Propagate) {
	if !u.exists {
		ctx.Respond(&wire.WriteReply{Error: notFound(wire.Error_USER, "Unknown user.")})
		return
	}
	if ProfileSize(fields) > MaxProfileBytes {
		ctx.Respond(&wire.WriteReply{Error: tooLarge(wire.Error_PROFILE,
			fmt.Sprintf("The profile would exceed %d bytes.", MaxProfileBytes))})
		return
	}
	if maps.EqualFunc(fields, u.profile.Fields, func(a, b json.RawMessage) bool { return bytes.Equal(a, b) }) {
		u.commit(ctx, &storage.Batch{}, &wire.WriteReply{Version: u.profile.Version}, nil)
		return
	}
	rec := profileRecord{Version: u.profile.Version + 1, Fields: fields, Unlisted: u.profile.Unlisted}
	upd := memberUpdate(u.profile.Fields, fields, rec.Version, mode)
	if upd != nil && mode == wire.Propagate_PROPAGATE_NONE {
		rec.Unlisted = rec.Version
	}
	u.profile = rec
	var b storage.Batch
	b.Set(u.key("profile"), mustJSON(rec))
	if upd != nil && mode != wire.Propagate_PROPAGATE_NONE {
		u.recordUpdate(&b, upd)
	}
	u.commit(ctx, &b, &wire.WriteReply{Version: rec.Version}, func() {
		u.committed, u.committedJSON = rec, nil
		u.publishEntry()
		if u.h.metrics != nil {
			u.h.metrics.ProfileWrite(field, op)
		}
		if upd != nil && mode != wire.Propagate_PROPAGATE_NONE {
			// The fan-out starts once the client has its answer: a pass
			// over every joined room is not the writer's wait.
			u.afterReply = append(u.afterReply, func() {
				_ = u.h.profilePresence(u.id, upd.Displayname, upd.AvatarUrl)
				u.updateDurable(upd)
			})
		}
	})
}

// jsonString decodes a JSON string value (absent: "").
func jsonString(raw json.RawMessage, out *string) error {
	if raw == nil {
		return nil
	}
	return json.Unmarshal(raw, out)
}
