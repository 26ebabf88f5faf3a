package api

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
	"maunium.net/go/mautrix/id"

	"persona/actors"
	"persona/internal/mxid"
	"persona/wire"
)

func (s *Server) accountRoutes() {
	s.handle("POST", "/register", s.register)
	s.handle("GET", "/register/available", s.registerAvailable)
	s.handle("GET", "/login", s.loginFlows)
	s.handle("POST", "/login", s.login)
	s.handle("GET", "/account/whoami", s.authed(s.whoami))
	s.handle("POST", "/logout", s.authed(s.logout))
	s.handle("POST", "/logout/all", s.authed(s.logoutAll))
	s.route("GET /_synapse/admin/v1/register", s.adminNonce)
	s.route("POST /_synapse/admin/v1/register", s.adminRegister)
}

// parseUserID splits a full user ID (mxid.ParseUserID); an invalid one is
// M_INVALID_PARAM.
func parseUserID(s string) (localpart, server string, err error) {
	localpart, server, err = mxid.ParseUserID(s)
	if err != nil {
		return "", "", invalidParam("Invalid user ID.")
	}
	return localpart, server, nil
}

// newUserID checks a requested localpart (lower-cased, as Synapse does) and
// makes the local user ID.
func (s *Server) newUserID(username string) (id.UserID, error) {
	local := strings.ToLower(strings.TrimPrefix(username, "@"))
	if l, srv, ok := strings.Cut(local, ":"); ok {
		if srv != strings.ToLower(s.cfg.ServerName) {
			return "", invalidUsername("User ID must be on this server.")
		}
		local = l
	}
	if id.ValidateUserLocalpart(local) != nil {
		return "", invalidUsername("User ID may only contain a-z, 0-9, and ._=-/+")
	}
	u := id.NewUserID(local, s.cfg.ServerName)
	if len(u) > 255 {
		return "", invalidUsername("User ID is too long.")
	}
	return u, nil
}

type registerRequest struct {
	Username                 string `json:"username"`
	Password                 string `json:"password"`
	DeviceID                 string `json:"device_id"`
	InitialDeviceDisplayName string `json:"initial_device_display_name"`
	InhibitLogin             bool   `json:"inhibit_login"`
	Auth                     *struct {
		Type    string `json:"type"`
		Session string `json:"session"`
	} `json:"auth"`
}

// uiaRequired is the 401 answer of user-interactive auth that offers stage.
func uiaRequired(stage string) *Error {
	return &Error{Status: 401, Fields: map[string]any{
		"flows":   []map[string]any{{"stages": []string{stage}}},
		"params":  map[string]any{},
		"session": randomString(16),
	}}
}

func (s *Server) register(r *http.Request) (any, error) {
	var req registerRequest
	if err := s.decode(r, &req, true); err != nil {
		return nil, err
	}
	if kind := r.URL.Query().Get("kind"); kind == "guest" {
		return nil, errorf(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is disabled.")
	}
	if !s.cfg.Registration.Open {
		return nil, forbidden("Registration is disabled.")
	}
	if req.Auth == nil || req.Auth.Type != "m.login.dummy" {
		return nil, uiaRequired("m.login.dummy")
	}
	if req.Username == "" {
		req.Username = "u" + strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(randomString(9)))
	}
	user, err := s.newUserID(req.Username)
	if err != nil {
		return nil, err
	}
	if len(req.Password) > 512 {
		return nil, invalidParam("Password too long.")
	}
	return s.createAccount(r, user, req.Password, false, "", req.DeviceID, req.InitialDeviceDisplayName, req.InhibitLogin)
}

// createAccount registers user with its profile and, unless inhibitLogin, a
// first device, and answers as /register does.
func (s *Server) createAccount(r *http.Request, user id.UserID, password string, admin bool,
	displayname, deviceID, deviceName string, inhibitLogin bool) (any, error) {
	var hash []byte
	if password != "" {
		var err error
		if hash, err = bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost); err != nil {
			return nil, invalidParam("Password cannot be used.")
		}
	}
	if displayname == "" {
		displayname = user.Localpart()
	}
	msg := &wire.Register{UserId: string(user), PasswordHash: hash, Admin: admin, Displayname: displayname}
	var token string
	if !inhibitLogin {
		if deviceID == "" {
			deviceID = newDeviceID()
		}
		var th []byte
		token, th = newToken(user)
		msg.Device = &wire.NewDevice{DeviceId: deviceID, TokenHash: th, DisplayName: deviceName}
	}
	if _, err := askAs[*wire.Done](r.Context(), s, actors.KindUser, string(user), msg); err != nil {
		return nil, err
	}
	resp := map[string]any{"user_id": user, "home_server": s.cfg.ServerName}
	if !inhibitLogin {
		resp["access_token"], resp["device_id"] = token, deviceID
	}
	return resp, nil
}

func newDeviceID() string {
	return strings.ToUpper(strings.NewReplacer("-", "A", "_", "B").Replace(randomString(8)))
}

func (s *Server) registerAvailable(r *http.Request) (any, error) {
	user, err := s.newUserID(r.URL.Query().Get("username"))
	if err != nil {
		return nil, err
	}
	acct, err := askAs[*wire.Account](r.Context(), s, actors.KindUser, string(user), &wire.GetAccount{UserId: string(user)})
	if err != nil {
		return nil, err
	}
	if acct.Exists {
		return nil, errorf(400, "M_USER_IN_USE", "User ID already taken.")
	}
	return map[string]bool{"available": true}, nil
}

func (s *Server) loginFlows(*http.Request) (any, error) {
	return map[string]any{"flows": []map[string]string{{"type": "m.login.password"}}}, nil
}

type loginRequest struct {
	Type       string `json:"type"`
	Identifier *struct {
		Type string `json:"type"`
		User string `json:"user"`
	} `json:"identifier"`
	User                     string `json:"user"`
	Password                 string `json:"password"`
	DeviceID                 string `json:"device_id"`
	InitialDeviceDisplayName string `json:"initial_device_display_name"`
}

var errBadLogin = forbidden("Invalid username or password.")

func (s *Server) login(r *http.Request) (any, error) {
	var req loginRequest
	if err := s.decode(r, &req, false); err != nil {
		return nil, err
	}
	if req.Type != "m.login.password" {
		return nil, badRequest("Unknown login type.")
	}
	name := req.User
	if req.Identifier != nil {
		if req.Identifier.Type != "m.id.user" {
			return nil, badRequest("Unknown identifier type.")
		}
		name = req.Identifier.User
	}
	if name == "" || req.Password == "" {
		return nil, badJSON("User and password are required.")
	}
	user, err := s.newUserID(name)
	if err != nil {
		return nil, errBadLogin
	}
	acct, err := askAs[*wire.Account](r.Context(), s, actors.KindUser, string(user), &wire.GetAccount{UserId: string(user)})
	if err != nil {
		return nil, err
	}
	if !acct.Exists || len(acct.PasswordHash) == 0 ||
		bcrypt.CompareHashAndPassword(acct.PasswordHash, []byte(req.Password)) != nil {
		return nil, errBadLogin
	}
	deviceID := req.DeviceID
	if deviceID == "" {
		deviceID = newDeviceID()
	}
	token, th := newToken(user)
	dev := &wire.NewDevice{DeviceId: deviceID, TokenHash: th, DisplayName: req.InitialDeviceDisplayName}
	if _, err := askAs[*wire.Done](r.Context(), s, actors.KindUser, string(user), &wire.AddDevice{UserId: string(user), Device: dev}); err != nil {
		return nil, err
	}
	return map[string]any{"user_id": user, "access_token": token, "device_id": deviceID, "home_server": s.cfg.ServerName}, nil
}

func (s *Server) whoami(_ *http.Request, sess *session) (any, error) {
	return map[string]any{"user_id": sess.user, "device_id": sess.device, "is_guest": false}, nil
}

func (s *Server) logout(r *http.Request, sess *session) (any, error) {
	return s.removeDevices(r, &wire.RemoveDevices{UserId: string(sess.user), DeviceIds: []string{sess.device}})
}

func (s *Server) logoutAll(r *http.Request, sess *session) (any, error) {
	return s.removeDevices(r, &wire.RemoveDevices{UserId: string(sess.user), All: true})
}

func (s *Server) removeDevices(r *http.Request, m *wire.RemoveDevices) (any, error) {
	if _, err := askAs[*wire.Done](r.Context(), s, actors.KindUser, m.UserId, m); err != nil {
		return nil, err
	}
	return map[string]any{}, nil
}

// nonces are the single-use nonces of shared-secret registration.
type nonces struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

const nonceTTL = time.Minute

func newNonces() *nonces { return &nonces{seen: map[string]time.Time{}} }

func (n *nonces) issue() string {
	nonce := hex.EncodeToString([]byte(randomString(24)))[:32]
	n.mu.Lock()
	defer n.mu.Unlock()
	now := time.Now()
	for k, t := range n.seen {
		if now.Sub(t) > nonceTTL {
			delete(n.seen, k)
		}
	}
	n.seen[nonce] = now
	return nonce
}

// use consumes a nonce; false if it was never issued, used, or expired.
func (n *nonces) use(nonce string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	t, ok := n.seen[nonce]
	delete(n.seen, nonce)
	return ok && time.Since(t) <= nonceTTL
}

func (s *Server) adminNonce(*http.Request) (any, error) {
	if s.secret == "" {
		return nil, badRequest("Shared secret registration is not enabled.")
	}
	return map[string]string{"nonce": s.nonces.issue()}, nil
}

type adminRegisterRequest struct {
	Nonce       string  `json:"nonce"`
	Username    string  `json:"username"`
	Displayname string  `json:"displayname"`
	Password    string  `json:"password"`
	Admin       bool    `json:"admin"`
	UserType    *string `json:"user_type"`
	MAC         string  `json:"mac"`
}

// RegistrationMAC is the mac of Synapse's shared-secret registration: hex
// HMAC-SHA1 over nonce, username, password and admin|notadmin (and the user
// type when given), NUL-separated.
func RegistrationMAC(secret, nonce, username, password string, admin bool, userType *string) string {
	m := hmac.New(sha1.New, []byte(secret))
	role := "notadmin"
	if admin {
		role = "admin"
	}
	m.Write([]byte(nonce + "\x00" + username + "\x00" + password + "\x00" + role))
	if userType != nil {
		m.Write([]byte("\x00" + *userType))
	}
	return hex.EncodeToString(m.Sum(nil))
}

func (s *Server) adminRegister(r *http.Request) (any, error) {
	var req adminRegisterRequest
	if err := s.decode(r, &req, false); err != nil {
		return nil, err
	}
	if s.secret == "" {
		return nil, badRequest("Shared secret registration is not enabled.")
	}
	if req.Nonce == "" || req.Username == "" || req.MAC == "" {
		return nil, missingParam("nonce, username and mac are required.")
	}
	if !s.nonces.use(req.Nonce) {
		return nil, badRequest("Unrecognised nonce.")
	}
	want := RegistrationMAC(s.secret, req.Nonce, req.Username, req.Password, req.Admin, req.UserType)
	if !hmac.Equal([]byte(want), []byte(strings.ToLower(req.MAC))) {
		return nil, forbidden("HMAC incorrect.")
	}
	user, err := s.newUserID(req.Username)
	if err != nil {
		return nil, err
	}
	return s.createAccount(r, user, req.Password, req.Admin, req.Displayname, "", "", false)
}
