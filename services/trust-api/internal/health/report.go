package health

import (
	"context"
	"net/http"
	"slices"
	"sync"

	"github.com/flip-trust/node/services/trust-api/internal/hub"
)

// Liveness records background tasks (task_poller, health_collector, ...)
// that ended while the service was still meant to run. Safe for concurrent use.
type Liveness struct {
	mu   sync.Mutex
	dead map[string]bool
}

// MarkDead records that the named background task died.
func (l *Liveness) MarkDead(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dead == nil {
		l.dead = map[string]bool{}
	}
	l.dead[name] = true
}

// Dead returns the dead tasks' names, sorted.
func (l *Liveness) Dead() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.dead))
	for name := range l.dead {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// Report is trust-api's /health body, in FLIP's shape.
type Report struct {
	Status    string   `json:"status"`
	Version   string   `json:"version"`
	DeadTasks []string `json:"dead_tasks"`
	hub.StatusView
}

// Handler returns the /health function: always HTTP 200, "degraded" when a
// background task died.
func Handler(version string, live *Liveness, hubStatus func() hub.StatusView) func(context.Context) (int, any) {
	return func(context.Context) (int, any) {
		r := Report{Status: "ok", Version: version, DeadTasks: live.Dead(), StatusView: hubStatus()}
		if len(r.DeadTasks) > 0 {
			r.Status = "degraded"
		}
		return http.StatusOK, r
	}
}
