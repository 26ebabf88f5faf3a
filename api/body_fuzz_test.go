package api_test

import (
	"net/http"
	"strings"
	"testing"

	"persona/config"
	"persona/internal/testnode"
)

// FuzzProfileRequest sends arbitrary keys, query strings and bodies to the
// profile endpoints of a real node: the answer is never a 5xx, and every
// error is a Matrix error.
func FuzzProfileRequest(f *testing.F) {
	n := testnode.Start(f, "", func(c *config.Config) { c.Profile.RateLimit.Burst = 0 })
	tok := n.Register("fuzz").AccessToken
	for _, s := range []struct{ key, query, body string }{
		{"displayname", "", `{"displayname":"x"}`}, {"displayname", "propagate_to=none", `{"displayname":null}`},
		{"avatar_url", "", `{"avatar_url":"mxc://a/b"}`}, {"m.tz", "", `{"m.tz":[]}`},
		{"com.x", "propagate=maybe", `{"com.x":{"deep":[1,2,{"a":"\u0000"}]}}`}, {"a", "", `{`}, {"a", "", ``},
		{"..%2F", "", `{}`}, {"a.b", "", `"str"`}, {"a.b", "", `{"a.b":1e999}`},
	} {
		f.Add(s.key, s.query, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, key, query string, body []byte) {
		if strings.ContainsAny(key, "/?#% \t\r\n") || strings.ContainsAny(query, "# \t\r\n") {
			return // not a path segment or query the client could send
		}
		for _, method := range []string{"PUT", "GET", "DELETE"} {
			url := n.URL + "/_matrix/client/v3/profile/@fuzz:" + testnode.ServerName + "/" + key + "?" + query
			req, err := http.NewRequest(method, url, strings.NewReader(string(body)))
			if err != nil {
				return
			}
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return
			}
			resp.Body.Close()
			if resp.StatusCode >= 500 {
				t.Fatalf("%s %s %q: status %d", method, key, body, resp.StatusCode)
			}
		}
	})
}
