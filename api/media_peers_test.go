package api

import (
	"errors"
	"testing"

	"persona/cluster"
)

// TestFromMember: the route for members answers a request from the host
// of any address a member gossips, IPv4 written as IPv6 too, and no other.
func TestFromMember(t *testing.T) {
	t.Parallel()
	members := []cluster.Member{
		{Name: "a", Addr: "10.0.0.1:7946", Meta: cluster.Meta{ActorAddr: "10.0.0.1:8090", RaftAddr: "10.0.0.1:8190", APIAddr: "10.0.0.1:8008"}},
		{Name: "b", Addr: "10.0.0.2:7946", Meta: cluster.Meta{APIAddr: "[fd00::2]:8008"}},
		{Name: "c", Addr: "10.0.0.3:7946", MetaErr: errors.New("unreadable metadata")},
	}
	for _, c := range []struct {
		remote string
		want   bool
	}{
		{"10.0.0.1:51000", true},
		{"10.0.0.2:51000", true},
		{"10.0.0.3:51000", true},
		{"[::ffff:10.0.0.1]:51000", true},
		{"[fd00::2]:51000", true},
		{"10.0.0.4:51000", false},
		{"[fd00::3]:51000", false},
		{"not an address", false},
		{"", false},
	} {
		if got := fromMember(members, c.remote); got != c.want {
			t.Errorf("fromMember(%q) = %v, want %v", c.remote, got, c.want)
		}
	}
}

// TestMemberError: a member's Matrix error reaches the client as it is;
// an answer that is not one is an error of the node's own.
func TestMemberError(t *testing.T) {
	t.Parallel()
	var e *Error
	err := memberError(409, []byte(`{"errcode":"M_CANNOT_OVERWRITE_MEDIA","error":"Media has already been uploaded to this ID."}`))
	if !errors.As(err, &e) || e.Status != 409 || e.Code != "M_CANNOT_OVERWRITE_MEDIA" {
		t.Fatalf("a member's 409: %v", err)
	}
	if err := memberError(502, []byte("<html>bad gateway</html>")); errors.As(err, &e) || answer(err) != errInternal {
		t.Fatalf("a member's answer that is no Matrix error: %v", err)
	}
}
