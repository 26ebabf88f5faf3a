package api_test

import (
	"testing"

	"persona/internal/testnode"
)

// TestDeleteDeviceAsksForThePassword walks user-interactive auth: no auth
// gets the flows (401, no errcode), a wrong password the flows with
// M_FORBIDDEN, the right one deletes the device.
func TestDeleteDeviceAsksForThePassword(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", nil)
	erin := n.Register("erin")
	url := n.URL + "/_matrix/client/v3/devices/" + string(erin.DeviceID)
	tok := erin.AccessToken
	s, b, _ := do(t, "DELETE", url, tok, "", `{}`)
	if s != 401 || b["flows"] == nil || b["session"] == nil || b["errcode"] != nil {
		t.Fatalf("without auth: %d %v", s, b)
	}
	wrong := `{"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"erin"},"password":"nope"}}`
	if s, b, _ := do(t, "DELETE", url, tok, "", wrong); s != 401 || b["flows"] == nil || b["errcode"] != "M_FORBIDDEN" {
		t.Fatalf("wrong password: %d %v", s, b)
	}
	other := `{"auth":{"type":"m.login.password","user":"frank","password":"password-erin"}}`
	if s, b, _ := do(t, "DELETE", url, tok, "", other); s != 403 || b["errcode"] != "M_FORBIDDEN" {
		t.Fatalf("someone else's name: %d %v", s, b)
	}
	right := `{"auth":{"type":"m.login.password","user":"erin","password":"password-erin"}}`
	if s, b, _ := do(t, "DELETE", url, tok, "", right); s != 200 {
		t.Fatalf("right password: %d %v", s, b)
	}
	if s, b, _ := do(t, "GET", n.URL+"/_matrix/client/v3/account/whoami", tok, "", ""); s != 401 || b["errcode"] != "M_UNKNOWN_TOKEN" {
		t.Fatalf("token of the deleted device: %d %v", s, b)
	}
}
