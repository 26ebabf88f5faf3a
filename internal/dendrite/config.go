package dendrite

import (
	"fmt"
	"os"

	"go.yaml.in/yaml/v3"
)

// editConfig rewrites the dendrite.yaml at path for a test peer: open
// registration with the given shared secret, no rate limiting, no TLS
// validation anywhere (peers' certificates are self-signed), no key
// perspectives (the default names matrix.org, unreachable here), a cheap
// bcrypt cost and logs on stderr only. configure, when set, edits the result
// last.
func editConfig(path, secret string, configure func(map[string]any)) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read dendrite config: %w", err)
	}
	cfg := map[string]any{}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		return fmt.Errorf("decode dendrite config %s: %w", path, err)
	}
	client, err := section(cfg, "client_api")
	if err != nil {
		return err
	}
	client["registration_disabled"] = false
	client["registration_shared_secret"] = secret
	limits, err := section(client, "rate_limiting")
	if err != nil {
		return err
	}
	limits["enabled"] = false
	federation, err := section(cfg, "federation_api")
	if err != nil {
		return err
	}
	federation["key_perspectives"] = []any{}
	user, err := section(cfg, "user_api")
	if err != nil {
		return err
	}
	user["bcrypt_cost"] = 4
	cfg["logging"] = []any{}
	disableTLSValidation(cfg)
	if configure != nil {
		configure(cfg)
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("encode dendrite config: %w", err)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		return fmt.Errorf("write dendrite config: %w", err)
	}
	return nil
}

// section returns the mapping under key in m.
func section(m map[string]any, key string) (map[string]any, error) {
	s, ok := m[key].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("dendrite config: %q is not a mapping", key)
	}
	return s, nil
}

// disableTLSValidation sets every disable_tls_validation key in v, at any
// depth, to true.
func disableTLSValidation(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, sub := range v {
			if k == "disable_tls_validation" || k == "push_gateway_disable_tls_validation" {
				v[k] = true
				continue
			}
			disableTLSValidation(sub)
		}
	case []any:
		for _, sub := range v {
			disableTLSValidation(sub)
		}
	}
}
