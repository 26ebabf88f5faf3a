package api

import (
	"sync"
	"time"
)

// limiter is a token bucket per user: burst writes at once, then perSecond.
// burst 0 disables it.
type limiter struct {
	mu        sync.Mutex
	burst     float64
	perSecond float64
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newLimiter(burst int, perSecond float64) *limiter {
	return &limiter{burst: float64(burst), perSecond: perSecond, buckets: map[string]*bucket{}}
}

// allow takes a token for key; when none is left it returns how long until one is.
func (l *limiter) allow(key string) (ok bool, wait time.Duration) {
	if l.burst <= 0 {
		return true, 0
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	b := l.buckets[key]
	if b == nil {
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.at).Seconds()*l.perSecond)
	b.at = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / l.perSecond * float64(time.Second))
}

// sweep forgets buckets that have refilled, so memory tracks active users only.
func (l *limiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < time.Minute {
		return
	}
	l.lastSweep = now
	full := time.Duration(l.burst / l.perSecond * float64(time.Second))
	for k, b := range l.buckets {
		if now.Sub(b.at) > full {
			delete(l.buckets, k)
		}
	}
}
