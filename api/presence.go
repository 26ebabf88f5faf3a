package api

import (
	"net/http"
	"time"

	"persona/actors"
)

// presenceRoutes registers the presence API.
func (s *Server) presenceRoutes() {
	s.handleFunc("PUT", "/presence/{userId}/status", s.authedFunc(s.putPresence))
	s.handleFunc("GET", "/presence/{userId}/status", s.authedFunc(s.getPresence))
}

type presenceBody struct {
	Presence  *string `json:"presence"`
	StatusMsg *string `json:"status_msg"`
}

// putPresence sets the sender's own presence; an absent status_msg clears it.
func (s *Server) putPresence(w http.ResponseWriter, r *http.Request, sess *session) {
	user, err := userIDParam(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if user != string(sess.user) {
		writeError(w, errorf(403, "M_FORBIDDEN", "You may only set your own presence."))
		return
	}
	var body presenceBody
	if err := s.decode(r, &body, false); err != nil {
		writeError(w, err)
		return
	}
	if body.Presence == nil {
		writeError(w, errorf(400, "M_MISSING_PARAM", "Missing presence."))
		return
	}
	switch *body.Presence {
	case "online", "offline", "unavailable":
	default:
		writeError(w, errorf(400, "M_INVALID_PARAM", "presence must be online, offline or unavailable."))
		return
	}
	if err := s.host.SetPresence(user, *body.Presence, body.StatusMsg); err != nil {
		s.log.Error("set presence", "user", user, "err", err)
		writeError(w, errInternal)
		return
	}
	writeJSON(w, 200, map[string]any{})
}

func (s *Server) getPresence(w http.ResponseWriter, r *http.Request, _ *session) {
	user, err := userIDParam(r)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, presenceContent(s.host.GetPresence(user), false))
}

// presenceContent is the m.presence content of p; withProfile adds the
// displayname and avatar_url that /sync shows.
func presenceContent(p actors.Presence, withProfile bool) map[string]any {
	c := map[string]any{"presence": p.Presence, "currently_active": p.CurrentlyActive}
	if !p.LastActive.IsZero() {
		c["last_active_ago"] = max(0, time.Since(p.LastActive).Milliseconds())
	}
	if p.StatusMsg != nil {
		c["status_msg"] = *p.StatusMsg
	}
	if withProfile {
		if p.Displayname != "" {
			c["displayname"] = p.Displayname
		}
		if p.AvatarURL != "" {
			c["avatar_url"] = p.AvatarURL
		}
	}
	return c
}
