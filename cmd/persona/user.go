package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"strings"
	"time"

	"persona/api"
	"persona/internal/mxid"
	"persona/internal/node"
)

func userCmd(args []string, stdout, stderr io.Writer) error {
	switch {
	case len(args) > 0 && args[0] == "create":
		return userCreate(args[1:], stdout, stderr)
	case len(args) > 0 && args[0] == "pending":
		return userPending(args[1:], stdout, stderr)
	}
	fmt.Fprintln(stderr, "usage: persona user create NAME [--admin] [--password PW] [--config FILE] [--url URL]")
	fmt.Fprintln(stderr, "       persona user pending @user:server [--config FILE] [--url URL] [--limit N]")
	return errors.New("unknown user command")
}

// userPending prints the rooms that have not yet acknowledged a user's latest
// profile version, through the node's admin API.
func userPending(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("user pending", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config of the node (default ./persona.yaml if present)")
	url := fs.String("url", "", "base URL of the node (default: from listen.client)")
	limit := fs.Int("limit", 100, "rooms to list at most (the count is always whole)")
	user, rest := "", args
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		user, rest = args[0], args[1:]
	}
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if user == "" {
		return errors.New("user pending: @user:server is required")
	}
	if _, _, err := mxid.ParseUserID(user); err != nil {
		return fmt.Errorf("user pending: %q is not a user ID: want @localpart:server (%v)", user, err)
	}
	cfg, err := loadConfig(*path, stderr)
	if err != nil {
		return err
	}
	secret, err := node.SharedSecret(cfg)
	if err != nil {
		return err
	}
	base := *url
	if base == "" {
		base = "http://" + cfg.Listen.Client
	}
	var out struct {
		Version uint64 `json:"version"`
		Pending int    `json:"pending"`
		Rooms   []struct {
			RoomID   string `json:"room_id"`
			Acked    uint64 `json:"acked_version"`
			InFlight bool   `json:"in_flight"`
		} `json:"rooms"`
	}
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/_persona/admin/v1/users/%s/pending?limit=%d", base, neturl.PathEscape(user), *limit), nil)
	req.Header.Set(api.SecretHeader, secret)
	if err := do(req, &out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: profile version %d, %d rooms behind\n", user, out.Version, out.Pending)
	for _, r := range out.Rooms {
		state := "queued"
		if r.InFlight {
			state = "in flight"
		}
		fmt.Fprintf(stdout, "  %s  acked %d  %s\n", r.RoomID, r.Acked, state)
	}
	if more := out.Pending - len(out.Rooms); more > 0 && len(out.Rooms) > 0 {
		fmt.Fprintf(stdout, "  ... and %d more\n", more)
	}
	return nil
}

// userCreate registers a user through a running node's shared-secret
// registration (the Synapse admin API) and prints its access token.
func userCreate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("user create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config of the node (default ./persona.yaml if present)")
	url := fs.String("url", "", "base URL of the node (default: from listen.client)")
	admin := fs.Bool("admin", false, "make the user a server admin")
	password := fs.String("password", "", "password (default: none; log in with the printed token)")
	name, rest := "", args
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, rest = args[0], args[1:]
	}
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if name == "" && fs.NArg() > 0 {
		name = fs.Arg(0)
	}
	if name == "" {
		return errors.New("user create: NAME is required")
	}
	cfg, err := loadConfig(*path, stderr)
	if err != nil {
		return err
	}
	secret, err := node.SharedSecret(cfg)
	if err != nil {
		return err
	}
	base := *url
	if base == "" {
		base = "http://" + cfg.Listen.Client
	}
	res, err := registerWithSecret(base, secret, name, *password, *admin)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "user_id: %s\ndevice_id: %s\naccess_token: %s\n", res.UserID, res.DeviceID, res.AccessToken)
	return nil
}

type registered struct {
	UserID      string `json:"user_id"`
	AccessToken string `json:"access_token"`
	DeviceID    string `json:"device_id"`
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

// registerWithSecret does Synapse's nonce + HMAC registration.
func registerWithSecret(base, secret, name, password string, admin bool) (*registered, error) {
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	if err := call(http.MethodGet, base+"/_synapse/admin/v1/register", "", nil, &nonce); err != nil {
		return nil, err
	}
	body := map[string]any{
		"nonce": nonce.Nonce, "username": name, "password": password, "admin": admin,
		"mac": api.RegistrationMAC(secret, nonce.Nonce, name, password, admin, nil),
	}
	var out registered
	if err := call(http.MethodPost, base+"/_synapse/admin/v1/register", "", body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// call makes one JSON request; a Matrix error becomes an error naming its errcode.
func call(method, url, token string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return do(req, out)
}

// do sends req; a Matrix error becomes an error naming its errcode.
func do(req *http.Request, out any) error {
	method, url := req.Method, req.URL.String()
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Errcode string `json:"errcode"`
			Error   string `json:"error"`
		}
		_ = json.Unmarshal(b, &e)
		return fmt.Errorf("%s %s: %d %s %s", method, url, resp.StatusCode, e.Errcode, e.Error)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}
