package hubserver

import (
	"sync"
	"time"
)

// limiter is a fixed-window counter per key: at most limit requests in each
// one-minute window, the strategy the FLIP hub's limiter uses by default.
// A limit of zero or less admits everything. It is safe for concurrent use.
type limiter struct {
	limit  int
	window time.Duration

	mu      sync.Mutex
	windows map[string]*window
	sweepAt time.Time
}

type window struct {
	start time.Time
	count int
}

func newLimiter(perMinute int) *limiter {
	return &limiter{limit: perMinute, window: time.Minute, windows: make(map[string]*window)}
}

// allow counts one request for key at now and reports whether it is within
// the limit.
func (l *limiter) allow(key string, now time.Time) bool {
	if l.limit <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.After(l.sweepAt) {
		// Forget expired windows so the map stays bounded by active trusts.
		for k, w := range l.windows {
			if now.Sub(w.start) >= l.window {
				delete(l.windows, k)
			}
		}
		l.sweepAt = now.Add(l.window)
	}
	w, ok := l.windows[key]
	if !ok || now.Sub(w.start) >= l.window || now.Before(w.start) {
		w = &window{start: now}
		l.windows[key] = w
	}
	if w.count >= l.limit {
		return false
	}
	w.count++
	return true
}
