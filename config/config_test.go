package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// noEnv is an empty environment.
func noEnv(string) (string, bool) { return "", false }

// env is an environment holding exactly m.
func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// wantAll fails t unless err is non-nil and contains every string in want.
func wantAll(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

func TestDefaultValidates(t *testing.T) {
	t.Parallel()
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestGenerateRoundTrip(t *testing.T) {
	t.Parallel()
	got, err := parse("", Generate(), noEnv)
	if err != nil {
		t.Fatalf("Parse(Generate()): %v\n%s", err, Generate())
	}
	if !reflect.DeepEqual(got, Default()) {
		t.Fatalf("Parse(Generate()) = %+v, want %+v", got, Default())
	}

	// Every field must come from the config, not a copy of the defaults.
	c := Default()
	leaves(reflect.ValueOf(c).Elem(), nil, func(_ []string, f reflect.Value) {
		switch {
		case f.Type() == durationType:
			f.SetInt(int64(f.Interface().(time.Duration) + 90*time.Second))
		case f.Kind() == reflect.String:
			f.SetString(f.String() + "x")
		case f.Kind() == reflect.Bool:
			f.SetBool(!f.Bool())
		case f.Kind() == reflect.Int, f.Kind() == reflect.Int64:
			f.SetInt(f.Int() + 1)
		case f.Kind() == reflect.Float64:
			f.SetFloat(f.Float() + 0.5)
		case f.Kind() == reflect.Slice:
			f.Set(reflect.Append(f, reflect.ValueOf("x.example"), reflect.ValueOf(`q"uote`)))
		case f.Kind() == reflect.Map:
			f.SetMapIndex(reflect.ValueOf("x.example:8448"), reflect.ValueOf("https://127.0.0.1:8448"))
			f.SetMapIndex(reflect.ValueOf("[::1]:1"), reflect.ValueOf(`a"b`))
		default:
			t.Fatalf("no change for a %s: extend this test", f.Type())
		}
	})
	var back Config
	if err := decodeYAML("", generate(c), &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&back, c) {
		t.Fatalf("generate(c) decodes to %+v, want %+v", back, *c)
	}
}

func TestGenerateCommentsEveryKey(t *testing.T) {
	t.Parallel()
	var doc yaml.Node
	if err := yaml.Unmarshal(Generate(), &doc); err != nil {
		t.Fatal(err)
	}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		for i := 0; i < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.HeadComment == "" {
				t.Errorf("key %s%s has no comment", path, k.Value)
			}
			if v.Kind == yaml.MappingNode {
				walk(v, path+k.Value+".")
			}
		}
	}
	walk(doc.Content[0], "")
}

func TestParseEmpty(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"", "\n", "# only a comment\n", "---\n", "listen:\n", "listen: {}\nlog: ~\n"} {
		got, err := parse("", []byte(in), noEnv)
		if err != nil {
			t.Errorf("parse(%q): %v", in, err)
		} else if !reflect.DeepEqual(got, Default()) {
			t.Errorf("parse(%q) = %+v, want defaults", in, got)
		}
	}
}

func TestParseValues(t *testing.T) {
	t.Parallel()
	in := "server_name: example.org\nlisten:\n  metrics: \"\"\nprofile:\n  rate_limit:\n    per_second: 0.5\nactors:\n  passivate_after: 90s\n"
	got, err := parse("", []byte(in), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.ServerName = "example.org"
	want.Listen.Metrics = ""
	want.Profile.RateLimit.PerSecond = 0.5
	want.Actors.PassivateAfter = 90 * time.Second
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestParseFederation(t *testing.T) {
	t.Parallel()
	in := `listen:
  federation: "127.0.0.1:0"
federation:
  tls_cert: /etc/persona/fed.crt
  tls_key: /etc/persona/fed.key
  well_known_server: matrix.example.org:443
  trusted_key_servers: [matrix.org, "notary.example:8448"]
  destinations:
    "127.0.0.1:8449": https://127.0.0.1:8449
    b.example: "https://[::1]:8450/"
  insecure_skip_verify: true
  key_validity: 24h
  allow_profile_lookup: false
  outbox_backoff_min: 100ms
  outbox_backoff_max: 2s
  outbox_horizon: 1h
  inbound_txn_ttl: 2h
  profile_cache_ttl: 2h
  profile_cache_error_ttl: 30s
`
	got, err := parse("", []byte(in), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Listen.Federation = "127.0.0.1:0"
	want.Federation = Federation{
		TLSCert:              "/etc/persona/fed.crt",
		TLSKey:               "/etc/persona/fed.key",
		WellKnownServer:      "matrix.example.org:443",
		TrustedKeyServers:    []string{"matrix.org", "notary.example:8448"},
		Destinations:         map[string]string{"127.0.0.1:8449": "https://127.0.0.1:8449", "b.example": "https://[::1]:8450/"},
		InsecureSkipVerify:   true,
		KeyValidity:          24 * time.Hour,
		AllowProfileLookup:   false,
		OutboxBackoffMin:     100 * time.Millisecond,
		OutboxBackoffMax:     2 * time.Second,
		OutboxHorizon:        time.Hour,
		InboundTxnTTL:        2 * time.Hour,
		ProfileCacheTTL:      2 * time.Hour,
		ProfileCacheErrorTTL: 30 * time.Second,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got.Federation, want.Federation)
	}

	got, err = parse("", []byte("listen:\n  federation: \"\"\nfederation:\n  trusted_key_servers: []\n  destinations: {}\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	want = Default()
	want.Listen.Federation = ""
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("empty list and mapping: got %+v, want %+v", got, want)
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
		want     []string
	}{
		{"unknown top key", "server_name: a\nlimit:\n  x: 1\n", []string{"line 2:", `unknown key "limit"`}},
		{"unknown nested key", "limits:\n  max_upload: 5\n", []string{"line 2:", `unknown key "limits.max_upload"`}},
		{"unknown deep key", "profile:\n  rate_limit:\n\n    brust: 3\n", []string{"line 4:", `"profile.rate_limit.brust"`}},
		{"int", "limits:\n  max_upload_bytes: abc\n", []string{"line 2:", "limits.max_upload_bytes:", `"abc"`, "integer"}},
		{"bool", "registration:\n  open: maybe\n", []string{"line 2:", "registration.open:", "boolean"}},
		{"duration", "actors:\n  passivate_after: 5\n", []string{"line 2:", "actors.passivate_after:", "duration"}},
		{"float", "profile:\n  rate_limit:\n    per_second: fast\n", []string{"line 3:", "profile.rate_limit.per_second:", "number"}},
		{"fraction for int", "actors:\n  partitions: 1.5\n", []string{"line 2:", "actors.partitions:", `"1.5"`}},
		{"yes for bool", "profile:\n  require_auth: yes\n", []string{"line 2:", "profile.require_auth:"}},
		{"null value", "listen:\n  metrics:\n", []string{"line 2:", "listen.metrics: no value"}},
		{"overflow", "limits:\n  max_request_bytes: 99999999999999999999\n", []string{"line 2:", "limits.max_request_bytes:"}},
		{"list for value", "listen:\n  client: [a, b]\n", []string{"line 2:", "listen.client:", "a list"}},
		{"scalar for section", "listen: 8008\n", []string{"line 1:", "listen:", "expected a mapping"}},
		{"scalar document", "hello\n", []string{"line 1:", "top level"}},
		{"duplicate", "log:\n  level: info\n  level: warn\n", []string{"line 3:", `duplicate key "log.level"`}},
		{"several at once", "foo: 1\nlimits:\n  max_upload_bytes: x\n", []string{"line 1:", `"foo"`, "line 3:", "limits.max_upload_bytes"}},
		{"syntax", "listen:\n  client: [\n", []string{"line"}},
		{"two documents", "log: {}\n---\nlog: {}\n", []string{"line 2:", "one YAML document"}},
		{"scalar for list", "federation:\n  trusted_key_servers: matrix.org\n", []string{"line 2:", "federation.trusted_key_servers:", "expected a list"}},
		{"null list", "federation:\n  trusted_key_servers:\n", []string{"line 2:", "federation.trusted_key_servers: no value", "[]"}},
		{"list of lists", "federation:\n  trusted_key_servers: [a, [b]]\n", []string{"line 2:", "federation.trusted_key_servers[1]:", "a list"}},
		{"null item", "federation:\n  trusted_key_servers:\n    - a\n    -\n", []string{"line 4:", "federation.trusted_key_servers[1]: no value"}},
		{"list for mapping", "federation:\n  destinations: [a]\n", []string{"line 2:", "federation.destinations:", "expected a mapping", "a list"}},
		{"null mapping", "federation:\n  destinations:\n", []string{"line 2:", "federation.destinations: no value", "{}"}},
		{"mapping value", "federation:\n  destinations:\n    a.example: {url: x}\n", []string{"line 3:", `federation.destinations["a.example"]:`, "a mapping"}},
		{"duplicate destination", "federation:\n  destinations:\n    a.example: https://a\n    a.example: https://b\n", []string{"line 4:", `duplicate key federation.destinations["a.example"]`}},
		{"federation bool", "federation:\n  insecure_skip_verify: 1\n", []string{"line 2:", "federation.insecure_skip_verify:", "boolean"}},
		{"federation duration", "federation:\n  key_validity: 7d\n", []string{"line 2:", "federation.key_validity:", "duration"}},
		{"federation unknown", "federation:\n  tls_certificate: x\n", []string{"line 2:", `unknown key "federation.tls_certificate"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse("", []byte(tt.in), noEnv)
			wantAll(t, err, tt.want...)
			if err != nil && strings.Contains(err.Error(), "config.") {
				t.Errorf("error %q names a Go type", err)
			}
		})
	}
}

func TestEnv(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		set  func(*Config)
	}{
		{"string", map[string]string{"PERSONA_SERVER_NAME": "example.org"}, func(c *Config) { c.ServerName = "example.org" }},
		{"empty string", map[string]string{"PERSONA_LISTEN_METRICS": ""}, func(c *Config) { c.Listen.Metrics = "" }},
		{"bool", map[string]string{"PERSONA_REGISTRATION_OPEN": "true"}, func(c *Config) { c.Registration.Open = true }},
		{"secret", map[string]string{"PERSONA_REGISTRATION_SHARED_SECRET": "s3"}, func(c *Config) { c.Registration.SharedSecret = "s3" }},
		{"int64", map[string]string{"PERSONA_LIMITS_MAX_UPLOAD_BYTES": "42"}, func(c *Config) { c.Limits.MaxUploadBytes = 42 }},
		{"nested int", map[string]string{"PERSONA_PROFILE_RATE_LIMIT_BURST": "0"}, func(c *Config) { c.Profile.RateLimit.Burst = 0 }},
		{"float", map[string]string{"PERSONA_PROFILE_RATE_LIMIT_PER_SECOND": "2.5"}, func(c *Config) { c.Profile.RateLimit.PerSecond = 2.5 }},
		{"duration", map[string]string{"PERSONA_ACTORS_PASSIVATE_AFTER": "1h"}, func(c *Config) { c.Actors.PassivateAfter = time.Hour }},
		{"federation off", map[string]string{"PERSONA_LISTEN_FEDERATION": ""}, func(c *Config) { c.Listen.Federation = "" }},
		{"list", map[string]string{"PERSONA_FEDERATION_TRUSTED_KEY_SERVERS": "matrix.org, n.example:8448"}, func(c *Config) {
			c.Federation.TrustedKeyServers = []string{"matrix.org", "n.example:8448"}
		}},
		{"empty list", map[string]string{"PERSONA_FEDERATION_TRUSTED_KEY_SERVERS": ""}, func(c *Config) { c.Federation.TrustedKeyServers = []string{} }},
		{"mapping", map[string]string{"PERSONA_FEDERATION_DESTINATIONS": "127.0.0.1:8449=https://127.0.0.1:8449,b.example = https://b.example"}, func(c *Config) {
			c.Federation.Destinations = map[string]string{"127.0.0.1:8449": "https://127.0.0.1:8449", "b.example": "https://b.example"}
		}},
		{"federation bool", map[string]string{"PERSONA_FEDERATION_INSECURE_SKIP_VERIFY": "true"}, func(c *Config) { c.Federation.InsecureSkipVerify = true }},
		{"federation duration", map[string]string{"PERSONA_FEDERATION_KEY_VALIDITY": "1h"}, func(c *Config) { c.Federation.KeyValidity = time.Hour }},
		{"outbox back-off", map[string]string{"PERSONA_FEDERATION_OUTBOX_BACKOFF_MIN": "50ms", "PERSONA_FEDERATION_OUTBOX_BACKOFF_MAX": "1s", "PERSONA_FEDERATION_OUTBOX_HORIZON": "30m"}, func(c *Config) {
			c.Federation.OutboxBackoffMin, c.Federation.OutboxBackoffMax, c.Federation.OutboxHorizon = 50*time.Millisecond, time.Second, 30*time.Minute
		}},
		{"federation files", map[string]string{"PERSONA_FEDERATION_TLS_CERT": "c.pem", "PERSONA_FEDERATION_TLS_KEY": "k.pem"}, func(c *Config) {
			c.Federation.TLSCert, c.Federation.TLSKey = "c.pem", "k.pem"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parse("", []byte("server_name: file.example\n"), env(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			want := Default()
			want.ServerName = "file.example"
			tt.set(want)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got %+v, want %+v", got, want)
			}
		})
	}
}

func TestEnvErrors(t *testing.T) {
	t.Parallel()
	_, err := parse("", nil, env(map[string]string{
		"PERSONA_ACTORS_PARTITIONS":        "many",
		"PERSONA_REGISTRATION_OPEN":        "yes please",
		"PERSONA_PROPAGATION_RESEND_AFTER": "2",
	}))
	wantAll(t, err, "PERSONA_ACTORS_PARTITIONS", `"many"`, "PERSONA_REGISTRATION_OPEN", "PERSONA_PROPAGATION_RESEND_AFTER")

	_, err = parse("", nil, env(map[string]string{"PERSONA_ACTORS_PARTITIONS": "0"}))
	wantAll(t, err, "actors.partitions")

	_, err = parse("", nil, env(map[string]string{
		"PERSONA_FEDERATION_DESTINATIONS":        "a.example https://a.example",
		"PERSONA_FEDERATION_TRUSTED_KEY_SERVERS": "a.example,,b.example",
	}))
	wantAll(t, err, "PERSONA_FEDERATION_DESTINATIONS", "a=b,c=d", "PERSONA_FEDERATION_TRUSTED_KEY_SERVERS", "a,b")

	_, err = parse("", nil, env(map[string]string{"PERSONA_FEDERATION_DESTINATIONS": "a.example=http://a.example"}))
	wantAll(t, err, `federation.destinations["a.example"]`)
}

func TestEnvNamesUnique(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	leaves(reflect.ValueOf(Default()).Elem(), nil, func(path []string, _ reflect.Value) {
		name := envName(path)
		if seen[name] {
			t.Errorf("two keys map to %s", name)
		}
		seen[name] = true
	})
	for _, name := range []string{"PERSONA_SERVER_NAME", "PERSONA_DATA_DIR", "PERSONA_LISTEN_CLIENT", "PERSONA_PROFILE_RATE_LIMIT_BURST", "PERSONA_ACTORS_PASSIVATE_AFTER",
		"PERSONA_LISTEN_FEDERATION", "PERSONA_FEDERATION_DESTINATIONS", "PERSONA_FEDERATION_ALLOW_PROFILE_LOOKUP",
		"PERSONA_CLUSTER_ENABLED", "PERSONA_CLUSTER_JOIN", "PERSONA_CLUSTER_GOSSIP_KEY_FILE"} {
		if !seen[name] {
			t.Errorf("no key maps to %s", name)
		}
	}
}

func TestLoadEnv(t *testing.T) {
	path := filepath.Join(t.TempDir(), "persona.yaml")
	if err := os.WriteFile(path, []byte("log:\n  level: warn\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PERSONA_LOG_FORMAT", "json")
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Log.Level != "warn" || c.Log.Format != "json" {
		t.Fatalf("log = %+v, want warn/json", c.Log)
	}
	t.Setenv("PERSONA_LIMITS_MAX_REQUEST_BYTES", "1MB")
	_, err = Load(path)
	wantAll(t, err, "PERSONA_LIMITS_MAX_REQUEST_BYTES")
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.yaml")
	_, err := Load(missing)
	wantAll(t, err, missing)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want fs.ErrNotExist", err)
	}

	bad := filepath.Join(dir, "persona.yaml")
	if err := os.WriteFile(bad, []byte("a: 1\nb: 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad)
	wantAll(t, err, bad+`: line 1: unknown key "a"`, bad+`: line 2: unknown key "b"`)
}

func TestSharedSecretPath(t *testing.T) {
	t.Parallel()
	c := Default()
	c.DataDir = "/var/lib/persona"
	if got, want := c.SharedSecretPath(), filepath.Join("/var/lib/persona", "registration_shared_secret"); got != want {
		t.Fatalf("SharedSecretPath() = %q, want %q", got, want)
	}
}
