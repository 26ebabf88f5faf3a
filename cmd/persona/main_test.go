package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"persona/config"
	"persona/internal/testnode"
)

func TestGenerateConfigIsTheDefaults(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if err := run([]string{"generate-config"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(out.Bytes())
	if err != nil {
		t.Fatalf("generated config does not load: %v", err)
	}
	if cfg.Listen.Client != "127.0.0.1:8008" || cfg.DataDir != "./data" {
		t.Fatalf("generated config = %+v", cfg)
	}
}

func TestUserCreateThroughSharedSecret(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", nil)
	file := filepath.Join(t.TempDir(), "persona.yaml")
	yaml := "server_name: " + testnode.ServerName + "\nregistration:\n  shared_secret: " + n.Config.Registration.SharedSecret + "\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := run([]string{"user", "create", "zed", "--admin", "--config", file, "--url", n.URL}, &out, &errOut); err != nil {
		t.Fatalf("user create: %v (%s)", err, errOut.String())
	}
	if !strings.Contains(out.String(), "user_id: @zed:"+testnode.ServerName) || !strings.Contains(out.String(), "access_token: pt_") {
		t.Fatalf("output: %s", out.String())
	}
	// A second create of the same name fails with the Matrix error.
	err := run([]string{"user", "create", "zed", "--config", file, "--url", n.URL}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "M_USER_IN_USE") {
		t.Fatalf("second create: %v", err)
	}
}

func TestServeRejectsBadConfig(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "persona.yaml")
	_ = os.WriteFile(file, []byte("listen:\n  clinet: 1.2.3.4:1\n"), 0o600)
	var errOut bytes.Buffer
	err := run([]string{"serve", "--config", file}, &errOut, &errOut)
	if err == nil || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), "clinet") {
		t.Fatalf("bad config: %v", err)
	}
}
