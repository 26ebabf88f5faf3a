package actors

import (
	"net/netip"
	"path"
	"strings"

	"persona/internal/mxid"
)

// Server ACLs (m.room.server_acl): a room takes nothing from a server its
// ACL denies, neither events (a transaction's PDUs, joins and leaves) nor
// reads, and hands it no join or leave template.

// serverAllowed reports whether the room's server ACL lets server take
// part: always when the room has none; "" is this server.
func (r *room) serverAllowed(server string) bool {
	if server == "" || server == r.h.cfg.ServerName {
		return true
	}
	c := r.stateContent("m.room.server_acl", "")
	if c == nil {
		return true
	}
	return aclAllows(c, server)
}

// aclAllows applies an ACL's content to a server name, as the spec says:
// the name's host (no port) is compared with the globs of deny, then of
// allow (none allowed when allow is missing), where * is any run of
// characters and ? one; an IP literal is denied when allow_ip_literals is
// false. Entries that are not strings are ignored.
func aclAllows(content map[string]any, server string) bool {
	host, _, err := mxid.ParseServerName(server)
	if err != nil {
		return false
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ipLiterals, ok := content["allow_ip_literals"].(bool); ok && !ipLiterals {
			return false
		}
		if ip.Is6() {
			host = "[" + host + "]" // as the server name writes it
		}
	}
	matches := func(key string) bool {
		list, _ := content[key].([]any)
		for _, e := range list {
			if glob, ok := e.(string); ok && globMatch(glob, host) {
				return true
			}
		}
		return false
	}
	return !matches("deny") && matches("allow")
}

// globMatch reports whether name matches glob, where * matches any run of
// characters and ? exactly one; every other character stands for itself.
func globMatch(glob, name string) bool {
	escaped := strings.NewReplacer(`\`, `\\`, `[`, `\[`, `]`, `\]`).Replace(glob)
	ok, err := path.Match(escaped, name)
	return err == nil && ok
}
