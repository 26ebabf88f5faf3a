package api

import (
	"bytes"
	"encoding/json"
	"mime"
	"net/http"
	"strings"

	"google.golang.org/protobuf/proto"

	"persona/actors"
	"persona/wire"
)

// profilePrefixes serve the profile API: the stable paths and MSC4133's
// unstable alias that older clients still use.
var profilePrefixes = append(clientPrefixes, "/_matrix/client/unstable/uk.tcpip.msc4133")

func (s *Server) profileRoutes() {
	for _, p := range profilePrefixes {
		s.route("GET "+p+"/profile/{userId}", s.getProfile)
		s.route("GET "+p+"/profile/{userId}/{keyName}", s.getField)
		s.route("PUT "+p+"/profile/{userId}/{keyName}", s.authed(s.putField))
		s.route("DELETE "+p+"/profile/{userId}/{keyName}", s.authed(s.deleteField))
	}
	// MSC4437: replace the whole profile at once.
	for _, p := range []string{"/_matrix/client/v3", "/_matrix/client/unstable/com.beeper.msc4437"} {
		s.route("PUT "+p+"/profile/{userId}", s.authed(s.replaceProfile))
	}
}

func (s *Server) fieldLimits() actors.FieldLimits {
	return actors.FieldLimits{Displayname: s.cfg.Profile.MaxDisplaynameChars, AvatarURL: s.cfg.Profile.MaxAvatarURLChars}
}

// readProfile fetches a local user's profile as a JSON object, checking who
// may read it.
func (s *Server) readProfile(r *http.Request) (json.RawMessage, error) {
	user, err := userIDParam(r)
	if err != nil {
		return nil, err
	}
	if s.cfg.Profile.RequireAuth || s.cfg.Profile.LimitToSharedRooms {
		sess, err := s.authenticate(r)
		if err != nil {
			return nil, err
		}
		if s.cfg.Profile.LimitToSharedRooms && string(sess.user) != user && !sess.admin {
			if err := s.shareRoom(r, string(sess.user), user); err != nil {
				return nil, err
			}
		}
	}
	if _, server, _ := parseUserID(user); server != s.cfg.ServerName {
		return s.remoteProfile(r.Context(), user)
	}
	p, err := askAs[*wire.ProfileReply](r.Context(), s, actors.KindUser, user, &wire.GetProfile{UserId: user})
	if err != nil {
		return nil, err
	}
	if !p.Exists {
		return nil, notFound("Profile was not found.")
	}
	return p.FieldsJson, nil
}

// shareRoom checks that a and b are joined to a common room
// (profile.limit_to_shared_rooms); a is a local user.
func (s *Server) shareRoom(r *http.Request, a, b string) error {
	if _, server, _ := parseUserID(b); server != s.cfg.ServerName {
		return s.shareRoomWithRemote(r, a, b)
	}
	joined := func(user string) (map[string]bool, error) {
		reply, err := askAs[*wire.RoomsReply](r.Context(), s, actors.KindUser, user, &wire.GetRooms{UserId: user})
		if err != nil {
			return nil, err
		}
		out := map[string]bool{}
		for _, m := range reply.Rooms {
			if m.Membership == "join" {
				out[m.RoomId] = true
			}
		}
		return out, nil
	}
	mine, err := joined(a)
	if err != nil {
		return err
	}
	theirs, err := joined(b)
	if err != nil {
		return err
	}
	for room := range mine {
		if theirs[room] {
			return nil
		}
	}
	return forbidden("You do not share a room with this user.")
}

// readFields is readProfile decoded.
func (s *Server) readFields(r *http.Request) (map[string]json.RawMessage, error) {
	raw, err := s.readProfile(r)
	if err != nil {
		return nil, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, err
	}
	return fields, nil
}

// getProfile answers the whole profile, or with ?keys=a,b (a persona
// extension) only the listed keys that are set.
func (s *Server) getProfile(r *http.Request) (any, error) {
	keys, filter := r.URL.Query()["keys"]
	if !filter {
		raw, err := s.readProfile(r)
		if err != nil {
			return nil, err
		}
		return raw, nil
	}
	fields, err := s.readFields(r)
	if err != nil {
		return nil, err
	}
	picked := map[string]json.RawMessage{}
	for _, list := range keys {
		for _, k := range strings.Split(list, ",") {
			if v, ok := fields[k]; ok {
				picked[k] = v
			}
		}
	}
	return picked, nil
}

func (s *Server) getField(r *http.Request) (any, error) {
	key := r.PathValue("keyName")
	if e := actors.ValidateKey(key); e != nil {
		return nil, e
	}
	fields, err := s.readFields(r)
	if err != nil {
		return nil, err
	}
	v, ok := fields[key]
	if !ok {
		return nil, notFound("Profile field was not found.")
	}
	return map[string]json.RawMessage{key: v}, nil
}

// writeTarget checks a profile write's path: a valid user the session may
// write (itself, or anyone for an admin) and, for field writes, a valid key.
func (s *Server) writeTarget(r *http.Request, sess *session, withKey bool) (user, key string, err error) {
	if user, err = userIDParam(r); err != nil {
		return "", "", err
	}
	if withKey {
		key = r.PathValue("keyName")
		if e := actors.ValidateKey(key); e != nil {
			return "", "", e
		}
	}
	if user != string(sess.user) && !sess.admin {
		return "", "", forbidden("You may only change your own profile.")
	}
	if _, server, _ := parseUserID(user); server != s.cfg.ServerName {
		return "", "", forbidden("Cannot change the profile of a remote user.")
	}
	return user, key, nil
}

func (s *Server) putField(r *http.Request, sess *session) (any, error) {
	user, key, err := s.writeTarget(r, sess, true)
	if err != nil {
		return nil, err
	}
	mode, err := propagation(r, key)
	if err != nil {
		return nil, err
	}
	var value json.RawMessage
	upload := key == "avatar_url" && isImage(r.Header.Get("Content-Type"))
	if upload {
		value, err = s.uploadAvatar(r, sess)
	} else {
		value, err = s.fieldValue(r, key)
	}
	if err != nil {
		return nil, err
	}
	if err := s.rateLimit(sess); err != nil {
		return nil, err
	}
	reply := map[string]any{}
	if upload {
		reply["avatar_url"] = value
	}
	out, err := s.profileWrite(r, user, &wire.SetProfileField{UserId: user, Key: key, ValueJson: value, Propagate: mode}, reply)
	if err == nil {
		s.announceProfile(user, map[string]json.RawMessage{key: value})
	}
	return out, err
}

// fieldValue reads the JSON body of a field write: an object holding the key.
func (s *Server) fieldValue(r *http.Request, key string) (json.RawMessage, error) {
	obj, err := s.readObject(r)
	if err != nil {
		return nil, err
	}
	raw, ok := obj[key]
	if !ok {
		return nil, missingParam("Missing key '" + key + "'.")
	}
	canon, e := actors.ValidateValue(key, raw, s.fieldLimits())
	if e != nil {
		return nil, e
	}
	return canon, nil
}

// uploadAvatar is persona's extension: PUT avatar_url with an image body
// stores the image as media and sets the avatar to it in one call.
func (s *Server) uploadAvatar(r *http.Request, sess *session) (json.RawMessage, error) {
	body, err := readBody(r, s.uploadLimit())
	if err != nil {
		return nil, err
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	mxc, err := s.storeMedia(r.Context(), body, ct, "", string(sess.user))
	if err != nil {
		return nil, err
	}
	b, _ := json.Marshal(mxc)
	return b, nil
}

func isImage(contentType string) bool {
	ct, _, err := mime.ParseMediaType(contentType)
	return err == nil && strings.HasPrefix(ct, "image/")
}

func (s *Server) deleteField(r *http.Request, sess *session) (any, error) {
	user, key, err := s.writeTarget(r, sess, true)
	if err != nil {
		return nil, err
	}
	mode, err := propagation(r, key)
	if err != nil {
		return nil, err
	}
	if err := s.rateLimit(sess); err != nil {
		return nil, err
	}
	out, err := s.profileWrite(r, user, &wire.DeleteProfileField{UserId: user, Key: key, Propagate: mode}, map[string]any{})
	if err == nil {
		s.announceProfile(user, map[string]json.RawMessage{key: json.RawMessage("null")})
	}
	return out, err
}

// replaceProfile is MSC4437's whole-profile PUT: every key is checked, and the
// profile becomes exactly the body, all or nothing.
func (s *Server) replaceProfile(r *http.Request, sess *session) (any, error) {
	user, _, err := s.writeTarget(r, sess, false)
	if err != nil {
		return nil, err
	}
	obj, err := s.readObject(r)
	if err != nil {
		return nil, err
	}
	for k, v := range obj {
		if e := actors.ValidateKey(k); e != nil {
			return nil, e
		}
		canon, e := actors.ValidateValue(k, v, s.fieldLimits())
		if e != nil {
			return nil, e
		}
		obj[k] = canon
	}
	mode, err := propagation(r, "displayname")
	if err != nil {
		return nil, err
	}
	if err := s.rateLimit(sess); err != nil {
		return nil, err
	}
	var before map[string]json.RawMessage
	if s.remote != nil { // the fields the replace removes are announced as null
		if p, err := askAs[*wire.ProfileReply](r.Context(), s, actors.KindUser, user, &wire.GetProfile{UserId: user}); err == nil {
			_ = json.Unmarshal(p.FieldsJson, &before)
		}
	}
	b, _ := json.Marshal(obj)
	out, err := s.profileWrite(r, user, &wire.ReplaceProfile{UserId: user, FieldsJson: b, Propagate: mode}, map[string]any{})
	if err == nil {
		s.announceProfile(user, profileDiff(before, obj))
	}
	return out, err
}

// profileDiff is what changed from profile before to after: the fields
// after sets to another value, and null for those it removes.
func profileDiff(before, after map[string]json.RawMessage) map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	for k, v := range after {
		if old, ok := before[k]; !ok || !bytes.Equal(old, v) {
			out[k] = v
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			out[k] = json.RawMessage("null")
		}
	}
	return out
}

// profileWrite sends a write to the user's actor and answers once it is durable.
func (s *Server) profileWrite(r *http.Request, user string, msg proto.Message, ok map[string]any) (any, error) {
	if _, err := askAs[*wire.WriteReply](r.Context(), s, actors.KindUser, user, msg); err != nil {
		return nil, err
	}
	return ok, nil
}

func (s *Server) rateLimit(sess *session) error {
	if sess.admin {
		return nil
	}
	if ok, wait := s.limiter.allow(string(sess.user)); !ok {
		return &Error{Status: 429, Code: "M_LIMIT_EXCEEDED", Message: "Too many profile changes.", RetryAfterMs: max(1, wait.Milliseconds())}
	}
	return nil
}

// propagation reads MSC4466's propagate_to and MSC4069's propagate query
// parameters (stable and unstable names). They apply to displayname and
// avatar_url only; other keys ignore them.
func propagation(r *http.Request, key string) (wire.Propagate, error) {
	q := r.URL.Query()
	first := func(names ...string) (string, bool) {
		for _, n := range names {
			if v, ok := q[n]; ok && len(v) > 0 {
				return v[0], true
			}
		}
		return "", false
	}
	mode := wire.Propagate_PROPAGATE_DEFAULT
	if v, ok := first("propagate_to", "computer.gingershaped.msc4466.propagate_to"); ok {
		switch v {
		case "all":
			mode = wire.Propagate_PROPAGATE_ALL
		case "unchanged":
			mode = wire.Propagate_PROPAGATE_UNCHANGED
		case "none":
			mode = wire.Propagate_PROPAGATE_NONE
		default:
			return 0, invalidParam("propagate_to must be all, unchanged or none.")
		}
	}
	if v, ok := first("propagate", "org.matrix.msc4069.propagate"); ok {
		switch v {
		case "true":
		case "false":
			mode = wire.Propagate_PROPAGATE_NONE
		default:
			return 0, invalidParam("propagate must be true or false.")
		}
	}
	if key != "displayname" && key != "avatar_url" {
		return wire.Propagate_PROPAGATE_DEFAULT, nil
	}
	return mode, nil
}

// shareRoomWithRemote checks that local user a and b, a user of another
// server, are joined to a common room: b has no actor here that knows its
// rooms, so a's joined rooms are asked for b's membership, until one says
// join.
func (s *Server) shareRoomWithRemote(r *http.Request, a, b string) error {
	reply, err := askAs[*wire.RoomsReply](r.Context(), s, actors.KindUser, a, &wire.GetRooms{UserId: a})
	if err != nil {
		return err
	}
	for _, m := range reply.Rooms {
		if m.Membership != "join" {
			continue
		}
		st, err := askAs[*wire.StateReply](r.Context(), s, actors.KindRoom, m.RoomId,
			&wire.GetState{RoomId: m.RoomId, UserId: a, Type: "m.room.member", StateKey: b})
		if isKind(err, wire.Error_NOT_FOUND) || isKind(err, wire.Error_FORBIDDEN) {
			continue
		} else if err != nil {
			return err
		}
		for _, raw := range st.EventsJson {
			var ev struct {
				Content struct {
					Membership string `json:"membership"`
				} `json:"content"`
			}
			if json.Unmarshal(raw, &ev) == nil && ev.Content.Membership == "join" {
				return nil
			}
		}
	}
	return forbidden("You do not share a room with this user.")
}
