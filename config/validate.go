package config

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"persona/internal/mxid"
)

// Validate checks every setting and returns all problems at once, joined
// with errors.Join; each problem starts with the key it is about.
func (c *Config) Validate() error {
	var p problems
	if c.ServerName == "" {
		p.add("server_name", "must not be empty")
	} else if _, _, err := mxid.ParseServerName(c.ServerName); err != nil {
		p.add("server_name", "%v (got %q)", err, c.ServerName)
	}
	if c.DataDir == "" {
		p.add("data_dir", "must not be empty")
	}
	if err := checkHostPort(c.Listen.Client); err != nil {
		p.add("listen.client", "%v (got %q)", err, c.Listen.Client)
	}
	if c.Listen.Metrics != "" {
		if err := checkHostPort(c.Listen.Metrics); err != nil {
			p.add("listen.metrics", `%v or "" to disable (got %q)`, err, c.Listen.Metrics)
		}
	}
	if c.Listen.Federation != "" {
		if err := checkHostPort(c.Listen.Federation); err != nil {
			p.add("listen.federation", `%v or "" to disable (got %q)`, err, c.Listen.Federation)
		}
	}
	c.Federation.validate(&p)
	positive(&p, "limits.max_upload_bytes", c.Limits.MaxUploadBytes)
	positive(&p, "limits.max_request_bytes", c.Limits.MaxRequestBytes)
	p.between("profile.max_displayname_chars", c.Profile.MaxDisplaynameChars, 1, 65536)
	p.between("profile.max_avatar_url_chars", c.Profile.MaxAvatarURLChars, 1, 65536)
	rl := c.Profile.RateLimit
	if rl.Burst < 0 {
		p.add("profile.rate_limit.burst", "must be >= 0, 0 disables the limit (got %d)", rl.Burst)
	}
	if rl.Burst > 0 && !(rl.PerSecond > 0 && !math.IsInf(rl.PerSecond, 0)) {
		p.add("profile.rate_limit.per_second", "must be a finite number > 0 when burst > 0 (got %v)", rl.PerSecond)
	}
	positive(&p, "propagation.max_backlog", c.Propagation.MaxBacklog)
	positive(&p, "propagation.max_in_flight", c.Propagation.MaxInFlight)
	p.positiveDuration("propagation.resend_after", c.Propagation.ResendAfter)
	p.between("actors.partitions", c.Actors.Partitions, 1, 65536)
	p.positiveDuration("actors.passivate_after", c.Actors.PassivateAfter)
	p.oneOf("storage.commit_path", c.Storage.CommitPath, "log", "raft")
	c.Cluster.validate(&p, c.Actors.Partitions)
	p.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	p.oneOf("log.format", c.Log.Format, "text", "json")
	return errors.Join(p...)
}

// problems collects validation errors.
type problems []error

func (p *problems) add(key, format string, args ...any) {
	*p = append(*p, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}

func (p *problems) between(key string, v, lo, hi int) {
	if v < lo || v > hi {
		p.add(key, "must be between %d and %d (got %d)", lo, hi, v)
	}
}

func positive[T int | int64](p *problems, key string, v T) {
	if v <= 0 {
		p.add(key, "must be > 0 (got %d)", v)
	}
}

func (p *problems) positiveDuration(key string, d time.Duration) {
	if d <= 0 {
		p.add(key, "must be a duration > 0 such as \"2s\" (got %q)", d)
	}
}

func (p *problems) oneOf(key, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	p.add(key, "must be one of %s (got %q)", strings.Join(allowed, "|"), v)
}

// checkHostPort checks a listen address: host:port with an optional host
// (empty means all interfaces) and a numeric port 0-65535 (0 picks a free port).
func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New(`must be host:port such as "127.0.0.1:8008"`)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port must be a number 0-65535, not %q", port)
	}
	if host == "" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if !mxid.ValidServerName(host) || strings.Contains(host, ":") {
		return fmt.Errorf("invalid host %q", host)
	}
	return nil
}

// validate adds the problems of the federation section to p.
func (f *Federation) validate(p *problems) {
	if (f.TLSCert == "") != (f.TLSKey == "") {
		p.add("federation.tls_cert", `and federation.tls_key must both be set, or both "" for a self-signed certificate (got %q and %q)`, f.TLSCert, f.TLSKey)
	}
	if f.WellKnownServer != "" {
		if _, _, err := mxid.ParseServerName(f.WellKnownServer); err != nil {
			p.add("federation.well_known_server", "%v (got %q)", err, f.WellKnownServer)
		}
	}
	for i, name := range f.TrustedKeyServers {
		if _, _, err := mxid.ParseServerName(name); err != nil {
			p.add(fmt.Sprintf("federation.trusted_key_servers[%d]", i), "%v (got %q)", err, name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(f.Destinations)) {
		key := fmt.Sprintf("federation.destinations[%q]", name)
		if _, _, err := mxid.ParseServerName(name); err != nil {
			p.add(key, "the key is no server name: %v", err)
		}
		if err := checkBaseURL(f.Destinations[name]); err != nil {
			p.add(key, "%v (got %q)", err, f.Destinations[name])
		}
	}
	p.positiveDuration("federation.key_validity", f.KeyValidity)
	p.positiveDuration("federation.outbox_backoff_min", f.OutboxBackoffMin)
	if f.OutboxBackoffMax < f.OutboxBackoffMin {
		p.add("federation.outbox_backoff_max", "must be at least federation.outbox_backoff_min (%s) (got %q)", f.OutboxBackoffMin, f.OutboxBackoffMax)
	}
	p.positiveDuration("federation.outbox_horizon", f.OutboxHorizon)
	p.positiveDuration("federation.inbound_txn_ttl", f.InboundTxnTTL)
	p.positiveDuration("federation.profile_cache_ttl", f.ProfileCacheTTL)
	p.positiveDuration("federation.profile_cache_error_ttl", f.ProfileCacheErrorTTL)
}

// checkBaseURL checks a destination's base URL: https://host[:port], with
// no path, query or user.
func checkBaseURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return errors.New(`must be a base URL such as "https://127.0.0.1:8448"`)
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port must be 1-65535, not %q", port)
		}
	}
	return nil
}
