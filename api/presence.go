package api

import (
	"net/http"
	"time"

	"persona/actors"
)

// presenceRoutes registers the presence API.
func (s *Server) presenceRoutes() {
	s.handle("PUT", "/presence/{userId}/status", s.authed(s.putPresence))
	s.handle("GET", "/presence/{userId}/status", s.authed(s.getPresence))
}

type presenceBody struct {
	Presence  *string `json:"presence"`
	StatusMsg *string `json:"status_msg"`
}

// putPresence sets the sender's own presence; an absent status_msg clears it.
func (s *Server) putPresence(r *http.Request, sess *session) (any, error) {
	user, err := userIDParam(r)
	if err != nil {
		return nil, err
	}
	if user != string(sess.user) {
		return nil, forbidden("You may only set your own presence.")
	}
	var body presenceBody
	if err := s.decode(r, &body, false); err != nil {
		return nil, err
	}
	if body.Presence == nil {
		return nil, missingParam("Missing presence.")
	}
	switch *body.Presence {
	case "online", "offline", "unavailable":
	default:
		return nil, invalidParam("presence must be online, offline or unavailable.")
	}
	if err := s.host.SetPresence(user, *body.Presence, body.StatusMsg); err != nil {
		s.log.Error("set presence", "user", user, "err", err)
		return nil, errInternal
	}
	return map[string]any{}, nil
}

func (s *Server) getPresence(r *http.Request, _ *session) (any, error) {
	user, err := userIDParam(r)
	if err != nil {
		return nil, err
	}
	return presenceContent(s.host.GetPresence(user), false), nil
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
