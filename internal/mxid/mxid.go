// Package mxid parses the Matrix identifiers persona checks, server names
// and user IDs, by the grammar of the spec's appendix, on top of
// mautrix-go's id package. Every check of either in persona goes through
// it. It holds no state and imports no other persona package; what an ID
// may do (who may act as it, where it lives) is for its callers.
package mxid

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"maunium.net/go/mautrix/id"
)

// ParseServerName splits a server name, hostname[:port], into its host and
// port (0 when it has none). The host is a DNS name (letters, digits, '-'
// and '.'), an IPv4 address or an IPv6 address in brackets, returned
// without them; the whole name is at most 255 bytes. Beyond the spec's
// grammar, which takes any five digits as a port and any hex digits, ':'
// and '.' in brackets, the port must be 1-65535 and the brackets must hold
// an IPv6 address: no server is reachable at anything else.
func ParseServerName(s string) (host string, port int, err error) {
	m := id.ServerNameRegex.FindStringSubmatch(s)
	if len(s) > 255 || m == nil {
		return "", 0, errors.New("not a server name: want a DNS name, an IPv4 address or an [IPv6] address, then an optional :port")
	}
	ipv6, ipv4, dns, portText := m[1], m[2], m[3], m[4]
	if ipv6 != "" {
		if ip, err := netip.ParseAddr(ipv6); err != nil || !ip.Is6() {
			return "", 0, fmt.Errorf("invalid IPv6 address %q in server name", ipv6)
		}
	}
	if portText != "" {
		if port, _ = strconv.Atoi(portText); port < 1 || port > 65535 {
			return "", 0, fmt.Errorf("port must be 1-65535, not %q", portText)
		}
	}
	return ipv6 + ipv4 + dns, port, nil
}

// ValidServerName reports whether ParseServerName accepts s.
func ValidServerName(s string) bool {
	_, _, err := ParseServerName(s)
	return err == nil
}

// ParseUserID splits a user ID, @localpart:server, into its localpart and
// server name. The ID is at most 255 bytes, its localpart is not empty and
// its server name is valid (ParseServerName). The localpart may hold any
// character but ':' and NUL: the spec's historical user IDs, outside its
// grammar for new ones, must be accepted.
func ParseUserID(s string) (localpart, server string, err error) {
	if len(s) > id.UserIDMaxLength {
		return "", "", fmt.Errorf("user ID longer than %d bytes", id.UserIDMaxLength)
	}
	localpart, server, err = id.UserID(s).Parse()
	if err != nil {
		return "", "", err
	}
	if localpart == "" || strings.IndexByte(localpart, 0) >= 0 {
		return "", "", fmt.Errorf("user ID %q: the localpart is empty or holds NUL", s)
	}
	if _, _, err := ParseServerName(server); err != nil {
		return "", "", fmt.Errorf("user ID %q: %w", s, err)
	}
	return localpart, server, nil
}

// ServerOf is the server name of a user id (after its first colon), or ""
// when it has none. It does not check the id: ParseUserID does.
func ServerOf(user string) string {
	_, server, ok := strings.Cut(user, ":")
	if !ok {
		return ""
	}
	return server
}
