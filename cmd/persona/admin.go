package main

import (
	"io"
	"net/http"

	"persona/api"
	"persona/internal/node"
)

// adminGet reads path of a running node's admin API into out: the node
// is at baseURL, else at listen.client of the config at cfgPath (default
// ./persona.yaml), and is authorised by that config's shared secret.
func adminGet(cfgPath, baseURL, path string, stderr io.Writer, out any) error {
	cfg, err := loadConfig(cfgPath, stderr)
	if err != nil {
		return err
	}
	secret, err := node.SharedSecret(cfg)
	if err != nil {
		return err
	}
	if baseURL == "" {
		baseURL = "http://" + cfg.Listen.Client
	}
	req, err := http.NewRequest(http.MethodGet, baseURL+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set(api.SecretHeader, secret)
	return do(req, out)
}
