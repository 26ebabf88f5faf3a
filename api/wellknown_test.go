package api_test

import (
	"testing"

	"persona/config"
	"persona/internal/testnode"
)

// TestWellKnownServer: /.well-known/matrix/server names
// federation.well_known_server when it is set, and is unrecognised when not.
func TestWellKnownServer(t *testing.T) {
	t.Parallel()
	delegated := testnode.Start(t, "", func(c *config.Config) { c.Federation.WellKnownServer = "matrix.example.org:443" })
	status, body, _ := do(t, "GET", delegated.URL+"/.well-known/matrix/server", "", "", "")
	if status != 200 || body["m.server"] != "matrix.example.org:443" || len(body) != 1 {
		t.Fatalf("delegated: %d %v", status, body)
	}
	plain := testnode.Start(t, "", nil)
	status, body, _ = do(t, "GET", plain.URL+"/.well-known/matrix/server", "", "", "")
	if status != 404 || body["errcode"] != "M_UNRECOGNIZED" {
		t.Fatalf("not delegated: %d %v", status, body)
	}
}
