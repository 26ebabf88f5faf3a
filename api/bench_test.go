package api_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"persona/config"
	"persona/internal/testnode"
)

// benchNode starts a node and registers users, returning their profile URLs
// and tokens. Real HTTP on loopback, real badger with fsync.
func benchNode(b *testing.B, users int) (urls, tokens []string) {
	n := testnode.Start(b, "", func(c *config.Config) { c.Profile.RateLimit.Burst = 0 })
	for i := 0; i < users; i++ {
		c := n.Register(fmt.Sprintf("bench%d", i))
		urls = append(urls, n.URL+"/_matrix/client/v3/profile/"+string(c.UserID))
		tokens = append(tokens, c.AccessToken)
	}
	return urls, tokens
}

func benchClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256}}
}

// BenchmarkProfileRead: GET /profile/{userId} from 64 concurrent clients.
func BenchmarkProfileRead(b *testing.B) {
	urls, _ := benchNode(b, 64)
	cl := benchClient()
	var next atomic.Int64
	b.SetParallelism(32) // 2 cores x 32 = 64 clients
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := cl.Get(urls[next.Add(1)%int64(len(urls))])
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

// BenchmarkProfileWrite: durable PUT displayname across 64 users from 64
// concurrent clients; each answer means the write is fsynced.
func BenchmarkProfileWrite(b *testing.B) {
	urls, tokens := benchNode(b, 64)
	cl := benchClient()
	var next atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			u := i % int64(len(urls))
			req, _ := http.NewRequest("PUT", urls[u]+"/displayname", strings.NewReader(fmt.Sprintf(`{"displayname":"n%d"}`, i)))
			req.Header.Set("Authorization", "Bearer "+tokens[u])
			resp, err := cl.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}
