package api

import (
	"net/http"

	"golang.org/x/crypto/bcrypt"

	"persona/actors"
	"persona/wire"
)

func (s *Server) deviceRoutes() {
	s.handle("GET", "/devices", s.authed(s.listDevices))
	s.handle("GET", "/devices/{deviceId}", s.authed(s.getDevice))
	s.handle("PUT", "/devices/{deviceId}", s.authed(s.renameDevice))
	s.handle("DELETE", "/devices/{deviceId}", s.authed(s.deleteDevice))
	s.handle("POST", "/delete_devices", s.authed(s.deleteDevices))
}

type deviceJSON struct {
	DeviceID    string  `json:"device_id"`
	DisplayName *string `json:"display_name,omitempty"`
	LastSeenTS  int64   `json:"last_seen_ts,omitempty"`
}

func (s *Server) devices(r *http.Request, sess *session) ([]deviceJSON, error) {
	reply, err := askAs[*wire.DevicesReply](r.Context(), s, actors.KindUser, string(sess.user), &wire.GetDevices{UserId: string(sess.user)})
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

func (s *Server) listDevices(r *http.Request, sess *session) (any, error) {
	devs, err := s.devices(r, sess)
	if err != nil {
		return nil, err
	}
	return map[string]any{"devices": devs}, nil
}

func (s *Server) getDevice(r *http.Request, sess *session) (any, error) {
	devs, err := s.devices(r, sess)
	if err != nil {
		return nil, err
	}
	for _, d := range devs {
		if d.DeviceID == r.PathValue("deviceId") {
			return d, nil
		}
	}
	return nil, notFound("Unknown device.")
}

func (s *Server) renameDevice(r *http.Request, sess *session) (any, error) {
	var body struct {
		DisplayName *string `json:"display_name"`
	}
	if err := s.decode(r, &body, true); err != nil {
		return nil, err
	}
	if body.DisplayName == nil {
		return map[string]any{}, nil
	}
	msg := &wire.RenameDevice{UserId: string(sess.user), DeviceId: r.PathValue("deviceId"), DisplayName: *body.DisplayName}
	if _, err := askAs[*wire.Done](r.Context(), s, actors.KindUser, string(sess.user), msg); err != nil {
		return nil, err
	}
	return map[string]any{}, nil
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
// with M_FORBIDDEN. A nil error lets the request go on.
func (s *Server) checkPassword(r *http.Request, sess *session, body *uiaBody) error {
	if body.Auth == nil || body.Auth.Type != "m.login.password" {
		return uiaRequired("m.login.password")
	}
	who := body.Auth.User
	if body.Auth.Identifier != nil {
		who = body.Auth.Identifier.User
	}
	if u, err := s.newUserID(who); err != nil || u != sess.user {
		return forbidden("You can only authenticate as yourself.")
	}
	acct, err := askAs[*wire.Account](r.Context(), s, actors.KindUser, string(sess.user), &wire.GetAccount{UserId: string(sess.user)})
	if err != nil {
		return err
	}
	if len(acct.PasswordHash) == 0 || bcrypt.CompareHashAndPassword(acct.PasswordHash, []byte(body.Auth.Password)) != nil {
		e := uiaRequired("m.login.password")
		e.Code, e.Message = "M_FORBIDDEN", "Invalid password."
		return e
	}
	return nil
}

func (s *Server) deleteDevice(r *http.Request, sess *session) (any, error) {
	var body uiaBody
	if err := s.decode(r, &body, true); err != nil {
		return nil, err
	}
	devs, err := s.devices(r, sess)
	if err != nil {
		return nil, err
	}
	id, found := r.PathValue("deviceId"), false
	for _, d := range devs {
		found = found || d.DeviceID == id
	}
	if !found {
		return nil, notFound("Unknown device.")
	}
	if err := s.checkPassword(r, sess, &body); err != nil {
		return nil, err
	}
	return s.removeDevices(r, &wire.RemoveDevices{UserId: string(sess.user), DeviceIds: []string{id}})
}

func (s *Server) deleteDevices(r *http.Request, sess *session) (any, error) {
	var body uiaBody
	if err := s.decode(r, &body, false); err != nil {
		return nil, err
	}
	if err := s.checkPassword(r, sess, &body); err != nil {
		return nil, err
	}
	return s.removeDevices(r, &wire.RemoveDevices{UserId: string(sess.user), DeviceIds: body.Devices})
}
