package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"persona/api"
	"persona/internal/node"
)

func userCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "create" {
		fmt.Fprintln(stderr, "usage: persona user create NAME [--admin] [--password PW] [--config FILE] [--url URL]")
		return errors.New("unknown user command")
	}
	return userCreate(args[1:], stdout, stderr)
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
