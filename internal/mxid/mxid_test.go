package mxid

import (
	"strings"
	"testing"
)

func TestParseServerName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in string
		host     string // "" when invalid
		port     int
	}{
		{"dns name", "matrix.org", "matrix.org", 0},
		{"dns name with port", "matrix.org:8448", "matrix.org", 8448},
		{"single label", "localhost", "localhost", 0},
		{"dns name with digits and dash", "hs-1.example2.test", "hs-1.example2.test", 0},
		{"upper case", "Example.ORG", "Example.ORG", 0},
		{"ipv4", "1.2.3.4", "1.2.3.4", 0},
		{"ipv4 with port", "1.2.3.4:1234", "1.2.3.4", 1234},
		{"ipv6", "[1234:5678::abcd]", "1234:5678::abcd", 0},
		{"ipv6 with port", "[::1]:8448", "::1", 8448},
		{"ipv6 mapped ipv4", "[::ffff:1.2.3.4]", "::ffff:1.2.3.4", 0},
		{"lowest port", "example.org:1", "example.org", 1},
		{"highest port", "example.org:65535", "example.org", 65535},
		{"255 bytes", strings.Repeat("a", 255), strings.Repeat("a", 255), 0},

		{"empty", "", "", 0},
		{"256 bytes", strings.Repeat("a", 256), "", 0},
		{"underscore", "exa_mple.org", "", 0},
		{"space", "example .org", "", 0},
		{"slash", "example.org/x", "", 0},
		{"bare ipv6", "::1", "", 0},
		{"ipv6 not hex", "[::g]", "", 0},
		{"ipv6 not an address", "[1:2]", "", 0},
		{"ipv6 with zone", "[fe80::1%eth0]", "", 0},
		{"unclosed bracket", "[::1", "", 0},
		{"empty brackets", "[]", "", 0},
		{"port 0", "example.org:0", "", 0},
		{"port too big", "example.org:65536", "", 0},
		{"port of six digits", "example.org:123456", "", 0},
		{"empty port", "example.org:", "", 0},
		{"port not a number", "example.org:http", "", 0},
		{"two ports", "example.org:1:2", "", 0},
		{"empty host", ":8448", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host, port, err := ParseServerName(tc.in)
			if tc.host == "" {
				if err == nil || ValidServerName(tc.in) {
					t.Fatalf("ParseServerName(%q) = %q, %d, want an error", tc.in, host, port)
				}
				return
			}
			if err != nil || host != tc.host || port != tc.port || !ValidServerName(tc.in) {
				t.Fatalf("ParseServerName(%q) = %q, %d, %v, want %q, %d", tc.in, host, port, err, tc.host, tc.port)
			}
		})
	}
}

func TestParseUserID(t *testing.T) {
	t.Parallel()
	long := "@" + strings.Repeat("a", 254-len(":example.org")) + ":example.org" // 255 bytes
	for _, tc := range []struct {
		name, in          string
		localpart, server string // "" when invalid
	}{
		{"plain", "@alice:example.org", "alice", "example.org"},
		{"every grammar character", "@a.b_c=d-e/f+0:example.org", "a.b_c=d-e/f+0", "example.org"},
		{"server with port", "@alice:example.org:8448", "alice", "example.org:8448"},
		{"ipv6 server", "@alice:[::1]:8448", "alice", "[::1]:8448"},
		{"ipv4 server", "@alice:1.2.3.4", "alice", "1.2.3.4"},
		{"historical upper case", "@Alice:example.org", "Alice", "example.org"},
		{"historical punctuation", "@a!b#c:example.org", "a!b#c", "example.org"},
		{"non-ASCII", "@é:example.org", "é", "example.org"},
		{"255 bytes", long, long[1 : len(long)-len(":example.org")], "example.org"},

		{"empty", "", "", ""},
		{"no sigil", "alice:example.org", "", ""},
		{"room sigil", "!alice:example.org", "", ""},
		{"no server", "@alice", "", ""},
		{"empty server", "@alice:", "", ""},
		{"empty localpart", "@:example.org", "", ""},
		{"NUL in localpart", "@a\x00b:example.org", "", ""},
		{"bad server", "@alice:exa_mple.org", "", ""},
		{"port 0", "@alice:example.org:0", "", ""},
		{"256 bytes", "@a" + long[1:], "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			local, server, err := ParseUserID(tc.in)
			if tc.server == "" {
				if err == nil {
					t.Fatalf("ParseUserID(%q) = %q, %q, want an error", tc.in, local, server)
				}
				return
			}
			if err != nil || local != tc.localpart || server != tc.server {
				t.Fatalf("ParseUserID(%q) = %q, %q, %v, want %q, %q", tc.in, local, server, err, tc.localpart, tc.server)
			}
		})
	}
}
