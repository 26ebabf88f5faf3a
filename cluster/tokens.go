package cluster

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
)

// PeerTokens returns, for each key of the cluster (cluster.gossip_key_file),
// in order, the token that proves a peer holds it on the channel label
// names: HMAC-SHA256(key, label), base64. A node sends its first key's
// token and accepts any key's, so that keys rotate as the gossip's do.
func PeerTokens(keys [][]byte, label string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		m := hmac.New(sha256.New, k)
		m.Write([]byte(label))
		out[i] = base64.StdEncoding.EncodeToString(m.Sum(nil))
	}
	return out
}

// ValidToken reports whether got is one of tokens, comparing every one in
// constant time.
func ValidToken(got string, tokens []string) bool {
	ok := false
	for _, want := range tokens {
		if hmac.Equal([]byte(got), []byte(want)) {
			ok = true
		}
	}
	return ok
}
