package api

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
	"maunium.net/go/mautrix/id"

	"persona/actors"
)

func (s *Server) accountRoutes() {
	s.handleFunc("POST", "/register", s.register)
	s.handleFunc("GET", "/register/available", s.registerAvailable)
	s.handleFunc("GET", "/login", s.loginFlows)
	s.handleFunc("POST", "/login", s.login)
	s.handleFunc("GET", "/account/whoami", s.authedFunc(s.whoami))
	s.handleFunc("POST", "/logout", s.authedFunc(s.logout))
	s.handleFunc("POST", "/logout/all", s.authedFunc(s.logoutAll))
	s.mux.HandleFunc("GET /_synapse/admin/v1/register", s.adminNonce)
	s.mux.HandleFunc("POST /_synapse/admin/v1/register", s.adminRegister)
}

// localpartGrammar is the spec's user ID localpart grammar.
var localpartGrammar = regexp.MustCompile(`^[a-z0-9._=\-/+]+$`)

// parseUserID splits a full user ID, checking the sigil and the server name.
func parseUserID(s string) (localpart, server string, err error) {
	if len(s) > 255 || !strings.HasPrefix(s, "@") {
		return "", "", errorf(400, "M_INVALID_PARAM", "Invalid user ID.")
	}
	localpart, server, err = id.UserID(s).Parse()
	if err != nil || localpart == "" || !actors.ValidServerName(server) {
		return "", "", errorf(400, "M_INVALID_PARAM", "Invalid user ID.")
	}
	return localpart, server, nil
}

// newUserID checks a requested localpart (lower-cased, as Synapse does) and
// makes the local user ID.
func (s *Server) newUserID(username string) (id.UserID, error) {
	local := strings.ToLower(strings.TrimPrefix(username, "@"))
	if l, srv, ok := strings.Cut(local, ":"); ok {
		if srv != strings.ToLower(s.cfg.ServerName) {
			return "", errorf(400, "M_INVALID_USERNAME", "User ID must be on this server.")
		}
		local = l
	}
	if !localpartGrammar.MatchString(local) {
		return "", errorf(400, "M_INVALID_USERNAME", "User ID may only contain a-z, 0-9, and ._=-/+")
	}
	u := id.NewUserID(local, s.cfg.ServerName)
	if len(u) > 255 {
		return "", errorf(400, "M_INVALID_USERNAME", "User ID is too long.")
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

func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	var req registerRequest
	if err := s.decode(r, &req, true); err != nil {
		writeError(w, err)
		return
	}
	if kind := r.URL.Query().Get("kind"); kind == "guest" {
		writeError(w, errorf(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is disabled."))
		return
	}
	if !s.cfg.Registration.Open {
		writeError(w, errorf(403, "M_FORBIDDEN", "Registration is disabled."))
		return
	}
	if req.Auth == nil || req.Auth.Type != "m.login.dummy" {
		writeJSON(w, 401, map[string]any{
			"flows":   []map[string]any{{"stages": []string{"m.login.dummy"}}},
			"params":  map[string]any{},
			"session": randomString(16),
		})
		return
	}
	if req.Username == "" {
		req.Username = "u" + strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(randomString(9)))
	}
	user, err := s.newUserID(req.Username)
	if err != nil {
		writeError(w, err)
		return
	}
	if len(req.Password) > 512 {
		writeError(w, errorf(400, "M_INVALID_PARAM", "Password too long."))
		return
	}
	s.createAccount(w, r, user, req.Password, false, "", req.DeviceID, req.InitialDeviceDisplayName, req.InhibitLogin)
}

// createAccount registers user with its profile and, unless inhibitLogin, a
// first device, and answers as /register does.
func (s *Server) createAccount(w http.ResponseWriter, r *http.Request, user id.UserID, password string, admin bool,
	displayname, deviceID, deviceName string, inhibitLogin bool) {
	var hash []byte
	if password != "" {
		var err error
		if hash, err = bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost); err != nil {
			writeError(w, errorf(400, "M_INVALID_PARAM", "Password cannot be used."))
			return
		}
	}
	if displayname == "" {
		displayname = user.Localpart()
	}
	msg := &actors.Register{UserId: string(user), PasswordHash: hash, Admin: admin, Displayname: displayname}
	var token string
	if !inhibitLogin {
		if deviceID == "" {
			deviceID = newDeviceID()
		}
		var th []byte
		token, th = newToken(user)
		msg.Device = &actors.NewDevice{DeviceId: deviceID, TokenHash: th, DisplayName: deviceName}
	}
	if _, err := s.ask(r.Context(), actors.KindUser, string(user), msg); err != nil {
		writeError(w, err)
		return
	}
	resp := map[string]any{"user_id": user, "home_server": s.cfg.ServerName}
	if !inhibitLogin {
		resp["access_token"], resp["device_id"] = token, deviceID
	}
	writeJSON(w, 200, resp)
}

func newDeviceID() string {
	return strings.ToUpper(strings.NewReplacer("-", "A", "_", "B").Replace(randomString(8)))
}

func (s *Server) registerAvailable(w http.ResponseWriter, r *http.Request) {
	user, err := s.newUserID(r.URL.Query().Get("username"))
	if err != nil {
		writeError(w, err)
		return
	}
	reply, err := s.ask(r.Context(), actors.KindUser, string(user), &actors.GetAccount{UserId: string(user)})
	if err != nil {
		writeError(w, err)
		return
	}
	if reply.(*actors.Account).Exists {
		writeError(w, errorf(400, "M_USER_IN_USE", "User ID already taken."))
		return
	}
	writeJSON(w, 200, map[string]bool{"available": true})
}

func (s *Server) loginFlows(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, map[string]any{"flows": []map[string]string{{"type": "m.login.password"}}})
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

var errBadLogin = errorf(403, "M_FORBIDDEN", "Invalid username or password.")

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	var req loginRequest
	if err := s.decode(r, &req, false); err != nil {
		writeError(w, err)
		return
	}
	if req.Type != "m.login.password" {
		writeError(w, errorf(400, "M_UNKNOWN", "Unknown login type."))
		return
	}
	name := req.User
	if req.Identifier != nil {
		if req.Identifier.Type != "m.id.user" {
			writeError(w, errorf(400, "M_UNKNOWN", "Unknown identifier type."))
			return
		}
		name = req.Identifier.User
	}
	if name == "" || req.Password == "" {
		writeError(w, errorf(400, "M_BAD_JSON", "User and password are required."))
		return
	}
	user, err := s.newUserID(name)
	if err != nil {
		writeError(w, errBadLogin)
		return
	}
	reply, err := s.ask(r.Context(), actors.KindUser, string(user), &actors.GetAccount{UserId: string(user)})
	if err != nil {
		writeError(w, err)
		return
	}
	acct := reply.(*actors.Account)
	if !acct.Exists || len(acct.PasswordHash) == 0 ||
		bcrypt.CompareHashAndPassword(acct.PasswordHash, []byte(req.Password)) != nil {
		writeError(w, errBadLogin)
		return
	}
	deviceID := req.DeviceID
	if deviceID == "" {
		deviceID = newDeviceID()
	}
	token, th := newToken(user)
	dev := &actors.NewDevice{DeviceId: deviceID, TokenHash: th, DisplayName: req.InitialDeviceDisplayName}
	if _, err := s.ask(r.Context(), actors.KindUser, string(user), &actors.AddDevice{UserId: string(user), Device: dev}); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, map[string]any{"user_id": user, "access_token": token, "device_id": deviceID, "home_server": s.cfg.ServerName})
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request, sess *session) {
	writeJSON(w, 200, map[string]any{"user_id": sess.user, "device_id": sess.device, "is_guest": false})
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, sess *session) {
	s.removeDevices(w, r, &actors.RemoveDevices{UserId: string(sess.user), DeviceIds: []string{sess.device}})
}

func (s *Server) logoutAll(w http.ResponseWriter, r *http.Request, sess *session) {
	s.removeDevices(w, r, &actors.RemoveDevices{UserId: string(sess.user), All: true})
}

func (s *Server) removeDevices(w http.ResponseWriter, r *http.Request, m *actors.RemoveDevices) {
	if _, err := s.ask(r.Context(), actors.KindUser, m.UserId, m); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, map[string]any{})
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

func (s *Server) adminNonce(w http.ResponseWriter, r *http.Request) {
	if s.secret == "" {
		writeError(w, errorf(400, "M_UNKNOWN", "Shared secret registration is not enabled."))
		return
	}
	writeJSON(w, 200, map[string]string{"nonce": s.nonces.issue()})
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

func (s *Server) adminRegister(w http.ResponseWriter, r *http.Request) {
	var req adminRegisterRequest
	if err := s.decode(r, &req, false); err != nil {
		writeError(w, err)
		return
	}
	if s.secret == "" {
		writeError(w, errorf(400, "M_UNKNOWN", "Shared secret registration is not enabled."))
		return
	}
	if req.Nonce == "" || req.Username == "" || req.MAC == "" {
		writeError(w, errorf(400, "M_MISSING_PARAM", "nonce, username and mac are required."))
		return
	}
	if !s.nonces.use(req.Nonce) {
		writeError(w, errorf(400, "M_UNKNOWN", "Unrecognised nonce."))
		return
	}
	want := RegistrationMAC(s.secret, req.Nonce, req.Username, req.Password, req.Admin, req.UserType)
	if !hmac.Equal([]byte(want), []byte(strings.ToLower(req.MAC))) {
		writeError(w, errorf(403, "M_FORBIDDEN", "HMAC incorrect."))
		return
	}
	user, err := s.newUserID(req.Username)
	if err != nil {
		writeError(w, err)
		return
	}
	s.createAccount(w, r, user, req.Password, req.Admin, req.Displayname, "", "", false)
}
