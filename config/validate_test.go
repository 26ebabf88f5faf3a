package config

import (
	"errors"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		set  func(*Config)
		want string // "" means valid
	}{
		{"ipv4 server", func(c *Config) { c.ServerName = "1.2.3.4:8448" }, ""},
		{"ipv6 server", func(c *Config) { c.ServerName = "[::1]:8448" }, ""},
		{"dns server", func(c *Config) { c.ServerName = "matrix.example.org" }, ""},
		{"empty server", func(c *Config) { c.ServerName = "" }, "server_name: must not be empty"},
		{"bad char", func(c *Config) { c.ServerName = "exa_mple.org" }, "server_name:"},
		{"bare ipv6", func(c *Config) { c.ServerName = "::1" }, "server_name:"},
		{"port 0", func(c *Config) { c.ServerName = "example.org:0" }, "server_name:"},
		{"port too big", func(c *Config) { c.ServerName = "example.org:65536" }, "server_name:"},
		{"empty port", func(c *Config) { c.ServerName = "example.org:" }, "server_name:"},
		{"listen all", func(c *Config) { c.Listen.Client = ":8008" }, ""},
		{"listen port 0", func(c *Config) { c.Listen.Client = "localhost:0" }, ""},
		{"listen no port", func(c *Config) { c.Listen.Client = "abc" }, "listen.client:"},
		{"metrics off", func(c *Config) { c.Listen.Metrics = "" }, ""},
		{"metrics bad", func(c *Config) { c.Listen.Metrics = "127.0.0.1:http" }, "listen.metrics:"},
		{"burst off", func(c *Config) { c.Profile.RateLimit = RateLimit{} }, ""},
		{"burst no rate", func(c *Config) { c.Profile.RateLimit.PerSecond = 0 }, "profile.rate_limit.per_second:"},
		{"partitions", func(c *Config) { c.Actors.Partitions = 65537 }, "actors.partitions:"},
		{"displayname", func(c *Config) { c.Profile.MaxDisplaynameChars = 0 }, "profile.max_displayname_chars:"},
		{"resend", func(c *Config) { c.Propagation.ResendAfter = 0 }, "propagation.resend_after:"},
		{"format", func(c *Config) { c.Log.Format = "JSON" }, "log.format:"},
		{"commit path raft", func(c *Config) { c.Storage.CommitPath = "raft" }, ""},
		{"commit path bad", func(c *Config) { c.Storage.CommitPath = "wal" }, "storage.commit_path:"},
		{"federation off", func(c *Config) { c.Listen.Federation = "" }, ""},
		{"federation any port", func(c *Config) { c.Listen.Federation = "127.0.0.1:0" }, ""},
		{"federation no port", func(c *Config) { c.Listen.Federation = "127.0.0.1" }, "listen.federation:"},
		{"cert without key", func(c *Config) { c.Federation.TLSCert = "c.pem" }, "federation.tls_cert:"},
		{"key without cert", func(c *Config) { c.Federation.TLSKey = "k.pem" }, "federation.tls_key"},
		{"cert and key", func(c *Config) { c.Federation.TLSCert, c.Federation.TLSKey = "c.pem", "k.pem" }, ""},
		{"well-known", func(c *Config) { c.Federation.WellKnownServer = "matrix.example.org:443" }, ""},
		{"bad well-known", func(c *Config) { c.Federation.WellKnownServer = "https://matrix.example.org" }, "federation.well_known_server:"},
		{"notaries", func(c *Config) { c.Federation.TrustedKeyServers = []string{"matrix.org", "127.0.0.1:8449"} }, ""},
		{"bad notary", func(c *Config) { c.Federation.TrustedKeyServers = []string{"matrix.org", "no_such"} }, "federation.trusted_key_servers[1]:"},
		{"destinations", func(c *Config) {
			c.Federation.Destinations = map[string]string{"127.0.0.1:8449": "https://127.0.0.1:8449", "[::1]:8450": "https://[::1]:8450/", "b.example": "https://b.example"}
		}, ""},
		{"bad destination name", func(c *Config) { c.Federation.Destinations = map[string]string{"a_b": "https://127.0.0.1:8449"} }, `federation.destinations["a_b"]: the key`},
		{"plain http destination", func(c *Config) { c.Federation.Destinations = map[string]string{"a.example": "http://127.0.0.1:8449"} }, `federation.destinations["a.example"]:`},
		{"destination path", func(c *Config) {
			c.Federation.Destinations = map[string]string{"a.example": "https://a.example/matrix"}
		}, `federation.destinations["a.example"]:`},
		{"destination port", func(c *Config) { c.Federation.Destinations = map[string]string{"a.example": "https://a.example:0"} }, `federation.destinations["a.example"]: port`},
		{"destination host", func(c *Config) { c.Federation.Destinations = map[string]string{"a.example": "127.0.0.1:8449"} }, `federation.destinations["a.example"]:`},
		{"key validity", func(c *Config) { c.Federation.KeyValidity = 0 }, "federation.key_validity:"},
		{"short back-off", func(c *Config) {
			c.Federation.OutboxBackoffMin, c.Federation.OutboxBackoffMax = 50*time.Millisecond, 50*time.Millisecond
		}, ""},
		{"no back-off", func(c *Config) { c.Federation.OutboxBackoffMin = 0 }, "federation.outbox_backoff_min:"},
		{"back-off max below min", func(c *Config) {
			c.Federation.OutboxBackoffMin, c.Federation.OutboxBackoffMax = time.Minute, time.Second
		}, "federation.outbox_backoff_max: must be at least federation.outbox_backoff_min"},
		{"no horizon", func(c *Config) { c.Federation.OutboxHorizon = -time.Hour }, "federation.outbox_horizon:"},
		{"no txn ttl", func(c *Config) { c.Federation.InboundTxnTTL = 0 }, "federation.inbound_txn_ttl:"},
		{"profile cache ttl", func(c *Config) { c.Federation.ProfileCacheTTL = 0 }, "federation.profile_cache_ttl:"},
		{"profile cache error ttl", func(c *Config) { c.Federation.ProfileCacheErrorTTL = -time.Second }, "federation.profile_cache_error_ttl:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.set(c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantAll(t, err, tt.want)
		})
	}
}

func TestValidateReportsAll(t *testing.T) {
	t.Parallel()
	c := Default()
	c.Limits.MaxUploadBytes = -1
	c.Profile.RateLimit.Burst = -1
	c.Actors.PassivateAfter = -time.Second
	c.Log.Level = "loud"
	err := c.Validate()
	wantAll(t, err, "limits.max_upload_bytes: must be > 0", "profile.rate_limit.burst:", "actors.passivate_after:", "log.level:")
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) != 4 {
		t.Fatalf("want 4 joined problems, got %v", err)
	}
}
