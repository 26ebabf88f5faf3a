package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"persona/internal/testnode"
)

// TestUserPending runs `persona user pending` against a real node: a user
// whose rename has reached its room, then the errors for users it cannot
// show (unknown, remote, malformed).
func TestUserPending(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", nil)
	file := filepath.Join(t.TempDir(), "persona.yaml")
	yaml := "server_name: " + testnode.ServerName + "\nregistration:\n  shared_secret: " + n.Config.Registration.SharedSecret + "\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	pending := func(user string) (string, error) {
		var out, errOut bytes.Buffer
		err := run([]string{"user", "pending", user, "--config", file, "--url", n.URL}, &out, &errOut)
		return out.String(), err
	}

	alice := n.Register("pendingalice")
	ctx := context.Background()
	if _, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{}); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetDisplayName(ctx, "Alice"); err != nil {
		t.Fatal(err)
	}
	// The rename reaches the room in the background: wait for it. (The
	// version printed is the one still being propagated: 0 once caught up.)
	want := regexp.MustCompile(`^` + regexp.QuoteMeta(alice.UserID.String()) + `: profile version [0-9]+, 0 rooms behind\n$`)
	var out string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var err error
		if out, err = pending(alice.UserID.String()); err != nil {
			t.Fatalf("pending %s: %v", alice.UserID, err)
		}
		if want.MatchString(out) || time.Now().After(deadline) {
			break
		}
	}
	if !want.MatchString(out) {
		t.Fatalf("pending %s printed %q, want %s", alice.UserID, out, want)
	}

	for _, tc := range []struct {
		name, user string
		wantErr    []string // substrings of the error
	}{
		{"unknown user", "@nobody:" + testnode.ServerName, []string{"404", "M_NOT_FOUND", "@nobody:" + testnode.ServerName + " does not exist"}},
		{"remote user", "@bob:remote.example", []string{"400", "M_INVALID_PARAM", "not a user of this server"}},
		{"no sigil", "pendingalice", []string{`"pendingalice" is not a user ID`, "@localpart:server"}},
		{"no server", "@pendingalice", []string{`"@pendingalice" is not a user ID`}},
		{"no localpart", "@:" + testnode.ServerName, []string{"is not a user ID"}},
		{"missing", "", []string{"@user:server is required"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := pending(tc.user)
			if err == nil {
				t.Fatalf("pending %q succeeded: %q", tc.user, out)
			}
			for _, s := range tc.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("pending %q: error %q does not say %q", tc.user, err, s)
				}
			}
			if out != "" {
				t.Errorf("pending %q printed %q on error", tc.user, out)
			}
		})
	}
	var out2, errOut bytes.Buffer
	err := run([]string{"user", "pending", alice.UserID.String(), "--config", file, "--url", n.URL, "--limit", "-1"}, &out2, &errOut)
	if err == nil || !strings.Contains(err.Error(), "M_INVALID_PARAM") || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("pending --limit -1: %v, printed %q", err, out2.String())
	}
}
