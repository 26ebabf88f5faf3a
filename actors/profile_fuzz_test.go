package actors

import (
	"encoding/json"
	"testing"

	"maunium.net/go/mautrix/crypto/canonicaljson"

	"persona/wire"
)

// FuzzValidateField checks that validation never panics, that what it
// accepts is canonical JSON within the limits, and that ProfileSize equals the
// canonical encoding's length. `go test -fuzz FuzzValidateField ./actors`
// explores; `go test` runs the seeds.
func FuzzValidateField(f *testing.F) {
	for _, s := range []struct{ key, value string }{
		{"displayname", `"Alice"`}, {"displayname", `7`}, {"displayname", `"` + "\u00e9\u0000" + `"`},
		{"avatar_url", `"mxc://example.org/abc"`}, {"avatar_url", `"mxc://ex ample/abc"`}, {"avatar_url", `""`},
		{"m.tz", `"Europe/Berlin"`}, {"com.example.obj", `{"b":1,"a":[1,2.5,"\u2028"]}`},
		{"Bad", `1`}, {"a.b", `{"x":`}, {"a.b", `1e400`}, {"a.b", `"\ud800"`},
	} {
		f.Add(s.key, []byte(s.value))
	}
	lim := FieldLimits{Displayname: 256, AvatarURL: 1000}
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		if ValidateKey(key) != nil {
			return
		}
		canon, e := ValidateValue(key, value, lim)
		if e != nil {
			if (e.Kind != wire.Error_BAD_VALUE && e.Kind != wire.Error_MALFORMED) || e.Message == "" {
				t.Fatalf("bad error %v", e)
			}
			return
		}
		if !json.Valid(canon) {
			t.Fatalf("accepted invalid JSON %q", canon)
		}
		again := append(json.RawMessage(nil), canon...)
		if err := canonicaljson.Canonicalize(&again); err != nil || string(again) != string(canon) {
			t.Fatalf("not canonical: %q vs %q", canon, again)
		}
		fields := map[string]json.RawMessage{key: canon, "displayname": json.RawMessage(`"x"`)}
		whole, _ := json.Marshal(fields)
		_ = canonicaljson.Canonicalize((*json.RawMessage)(&whole))
		if ProfileSize(fields) != len(whole) {
			t.Fatalf("ProfileSize %d, canonical %d (%s)", ProfileSize(fields), len(whole), whole)
		}
	})
}
