package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"

	"persona/api"
	"persona/internal/node"
)

// adminCommand runs the command name, which takes only --config and
// --url (adminGet's cfgPath and baseURL), by reading path of the node's
// admin API into out.
func adminCommand(name string, args []string, path string, stderr io.Writer, out any) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "config of the node (default ./persona.yaml if present)")
	baseURL := fs.String("url", "", "base URL of the node (default: from listen.client)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q", name, fs.Arg(0))
	}
	return adminGet(*cfgPath, *baseURL, path, stderr, out)
}

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
