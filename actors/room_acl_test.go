package actors

import "testing"

// aclAllows follows the spec's rules for m.room.server_acl: deny wins over
// allow, a missing allow denies everyone, globs match the host without its
// port, and allow_ip_literals false shuts out IP literals.
func TestServerACL(t *testing.T) {
	t.Parallel()
	list := func(globs ...string) []any {
		out := make([]any, len(globs))
		for i, g := range globs {
			out[i] = g
		}
		return out
	}
	cases := []struct {
		name    string
		content map[string]any
		server  string
		want    bool
	}{
		{"allowed by *", map[string]any{"allow": list("*")}, "example.org", true},
		{"no allow list", map[string]any{"deny": list("evil.org")}, "example.org", false},
		{"denied", map[string]any{"allow": list("*"), "deny": list("evil.org")}, "evil.org", false},
		{"deny wins over allow", map[string]any{"allow": list("evil.org"), "deny": list("evil.org")}, "evil.org", false},
		{"the port is no part of the host", map[string]any{"allow": list("*"), "deny": list("evil.org")}, "evil.org:8448", false},
		{"a glob with a port matches no host", map[string]any{"allow": list("*"), "deny": list("evil.org:8448")}, "evil.org:8448", true},
		{"* spans dots", map[string]any{"allow": list("*"), "deny": list("*.evil.org")}, "a.b.evil.org", false},
		{"? is one character", map[string]any{"allow": list("hs?")}, "hs1", true},
		{"? is not two", map[string]any{"allow": list("hs?")}, "hs12", false},
		{"brackets are literal", map[string]any{"allow": list("[a]")}, "a", false},
		{"IP literals allowed by default", map[string]any{"allow": list("*")}, "127.0.0.1:8448", true},
		{"IP literals denied", map[string]any{"allow": list("*"), "allow_ip_literals": false}, "127.0.0.1:8448", false},
		{"IPv6 literals denied", map[string]any{"allow": list("*"), "allow_ip_literals": false}, "[::1]:8448", false},
		{"IPv6 host in brackets", map[string]any{"allow": list("[::1]")}, "[::1]:8448", true},
		{"entries that are not strings", map[string]any{"allow": []any{42, "*"}, "deny": []any{true}}, "example.org", true},
		{"allow that is not a list", map[string]any{"allow": "*"}, "example.org", false},
	}
	for _, c := range cases {
		if got := aclAllows(c.content, c.server); got != c.want {
			t.Errorf("%s: aclAllows(%v, %q) = %v, want %v", c.name, c.content, c.server, got, c.want)
		}
	}
}
