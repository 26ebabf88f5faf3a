package api

import (
	"net/http"

	"golang.org/x/crypto/bcrypt"

	"persona/actors"
)

func (s *Server) deviceRoutes() {
	s.handleFunc("GET", "/devices", s.authedFunc(s.listDevices))
	s.handleFunc("GET", "/devices/{deviceId}", s.authedFunc(s.getDevice))
	s.handleFunc("PUT", "/devices/{deviceId}", s.authedFunc(s.renameDevice))
	s.handleFunc("DELETE", "/devices/{deviceId}", s.authedFunc(s.deleteDevice))
	s.handleFunc("POST", "/delete_devices", s.authedFunc(s.deleteDevices))
}

type deviceJSON struct {
	DeviceID    string  `json:"device_id"`
	DisplayName *string `json:"display_name,omitempty"`
	LastSeenTS  int64   `json:"last_seen_ts,omitempty"`
}

func (s *Server) devices(r *http.Request, sess *session) ([]deviceJSON, error) {
	reply, err := askAs[*actors.DevicesReply](r.Context(), s, actors.KindUser, string(sess.user), &actors.GetDevices{UserId: string(sess.user)})
	if err != nil {
		return nil, err
	}
	out := make([]deviceJSON, 0, len(reply.Devices))
	for _, d := range reply.Devices {
		j := deviceJSON{DeviceID: d.DeviceId, LastSeenTS: d.CreatedMs}
		if d.DisplayName != "" {
			name := d.DisplayName
			j.DisplayName = &name
		}
		out = append(out, j)
	}
	return out, nil
}

func (s *Server) listDevices(w http.ResponseWriter, r *http.Request, sess *session) {
	devs, err := s.devices(r, sess)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, map[string]any{"devices": devs})
}

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request, sess *session) {
	devs, err := s.devices(r, sess)
	if err != nil {
		writeError(w, err)
		return
	}
	for _, d := range devs {
		if d.DeviceID == r.PathValue("deviceId") {
			writeJSON(w, 200, d)
			return
		}
	}
	writeError(w, errorf(404, "M_NOT_FOUND", "Unknown device."))
}

func (s *Server) renameDevice(w http.ResponseWriter, r *http.Request, sess *session) {
	var body struct {
		DisplayName *string `json:"display_name"`
	}
	if err := s.decode(r, &body, true); err != nil {
		writeError(w, err)
		return
	}
	if body.DisplayName == nil {
		writeJSON(w, 200, map[string]any{})
		return
	}
	msg := &actors.RenameDevice{UserId: string(sess.user), DeviceId: r.PathValue("deviceId"), DisplayName: *body.DisplayName}
	if _, err := s.ask(r.Context(), actors.KindUser, string(sess.user), msg); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, map[string]any{})
}

// uiaBody is the part of a user-interactive-auth body we read.
type uiaBody struct {
	Auth *struct {
		Type       string `json:"type"`
		Session    string `json:"session"`
		Password   string `json:"password"`
		User       string `json:"user"`
		Identifier *struct {
			User string `json:"user"`
		} `json:"identifier"`
	} `json:"auth"`
	Devices []string `json:"devices"`
}

// checkPassword runs user-interactive authentication with m.login.password:
// without auth it answers 401 with the flows; a wrong password is 401 too,
// with M_FORBIDDEN. It reports whether the request may go on.
func (s *Server) checkPassword(w http.ResponseWriter, r *http.Request, sess *session, body *uiaBody) bool {
	flows := map[string]any{"flows": []map[string]any{{"stages": []string{"m.login.password"}}}, "params": map[string]any{}, "session": randomString(16)}
	if body.Auth == nil || body.Auth.Type != "m.login.password" {
		writeJSON(w, 401, flows)
		return false
	}
	who := body.Auth.User
	if body.Auth.Identifier != nil {
		who = body.Auth.Identifier.User
	}
	if u, err := s.newUserID(who); err != nil || u != sess.user {
		writeError(w, errorf(403, "M_FORBIDDEN", "You can only authenticate as yourself."))
		return false
	}
	acct, err := askAs[*actors.Account](r.Context(), s, actors.KindUser, string(sess.user), &actors.GetAccount{UserId: string(sess.user)})
	if err != nil {
		writeError(w, err)
		return false
	}
	if len(acct.PasswordHash) == 0 || bcrypt.CompareHashAndPassword(acct.PasswordHash, []byte(body.Auth.Password)) != nil {
		flows["errcode"], flows["error"] = "M_FORBIDDEN", "Invalid password."
		writeJSON(w, 401, flows)
		return false
	}
	return true
}

func (s *Server) deleteDevice(w http.ResponseWriter, r *http.Request, sess *session) {
	var body uiaBody
	if err := s.decode(r, &body, true); err != nil {
		writeError(w, err)
		return
	}
	devs, err := s.devices(r, sess)
	if err != nil {
		writeError(w, err)
		return
	}
	id, found := r.PathValue("deviceId"), false
	for _, d := range devs {
		found = found || d.DeviceID == id
	}
	if !found {
		writeError(w, errorf(404, "M_NOT_FOUND", "Unknown device."))
		return
	}
	if !s.checkPassword(w, r, sess, &body) {
		return
	}
	s.removeDevices(w, r, &actors.RemoveDevices{UserId: string(sess.user), DeviceIds: []string{id}})
}

func (s *Server) deleteDevices(w http.ResponseWriter, r *http.Request, sess *session) {
	var body uiaBody
	if err := s.decode(r, &body, false); err != nil {
		writeError(w, err)
		return
	}
	if !s.checkPassword(w, r, sess, &body) {
		return
	}
	s.removeDevices(w, r, &actors.RemoveDevices{UserId: string(sess.user), DeviceIds: body.Devices})
}
