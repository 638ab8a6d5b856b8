package delivery

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flip-trust/node/services/trust-api/internal/journal"
)

// slowHub answers every post after a delay and tracks how many are in
// flight at once.
type slowHub struct {
	*fakeHub
	delay time.Duration

	mu           sync.Mutex
	now, maxSeen int
}

func (s *slowHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.now++
	s.maxSeen = max(s.maxSeen, s.now)
	s.mu.Unlock()
	time.Sleep(s.delay)
	s.fakeHub.ServeHTTP(w, r)
	s.mu.Lock()
	s.now--
	s.mu.Unlock()
}

func taskN(i int) string { return fmt.Sprintf("2b8e4f5c-1d2a-4c3b-9e8f-%012d", i) }

func TestConcurrentDeliveryExactlyOnceInOrder(t *testing.T) {
	t.Parallel()
	for _, conc := range []int{1, 4, 8} {
		t.Run(fmt.Sprintf("concurrency %d", conc), func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			slow := &slowHub{fakeHub: r.hub, delay: 10 * time.Millisecond}
			r.srv.Config.Handler = slow
			const n = 40
			for i := range n {
				var cohort json.RawMessage
				if i%2 == 0 {
					cohort = json.RawMessage(fmt.Sprintf(`{"query_id":"q%d","trust_id":"t"}`, i))
				}
				r.record(t, taskN(i), journal.Outcome{Success: true, Result: strp("{}"), CohortResults: cohort})
			}
			r.start(t, Options{Concurrency: conc})
			for i := range n {
				r.waitState(t, taskN(i), journal.Delivered)
			}
			time.Sleep(50 * time.Millisecond) // a stray second post would land here
			results := map[string]int{}
			cohortAt := map[string]int{}
			for k, p := range r.hub.all() {
				if p.path == "/api/cohort/results" {
					var body struct {
						QueryID string `json:"query_id"`
					}
					_ = json.Unmarshal([]byte(p.body), &body)
					cohortAt[body.QueryID] = k
					continue
				}
				id := strings.TrimSuffix(strings.TrimPrefix(p.path, "/api/tasks/"), "/result")
				results[id]++
				var i int
				_, _ = fmt.Sscanf(id[len(id)-12:], "%d", &i)
				if i%2 == 0 {
					at, ok := cohortAt[fmt.Sprintf("q%d", i)]
					if !ok || at > k {
						t.Errorf("task %d: result posted before its cohort results", i)
					}
				}
			}
			if len(results) != n || len(cohortAt) != n/2 {
				t.Fatalf("%d results and %d cohort bodies posted, want %d and %d", len(results), len(cohortAt), n, n/2)
			}
			for id, c := range results {
				if c != 1 {
					t.Errorf("task %s: result posted %d times", id, c)
				}
			}
			slow.mu.Lock()
			seen := slow.maxSeen
			slow.mu.Unlock()
			if seen > conc || (conc > 1 && seen < 2) {
				t.Fatalf("%d posts in flight at once with concurrency %d", seen, conc)
			}
		})
	}
}

func TestHubWideFailureHoldsTheBacklog(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.srv.Config.Handler = &slowHub{fakeHub: r.hub, delay: 60 * time.Millisecond}
	r.hub.scripts["result"] = []func(http.ResponseWriter){status(503, "Retry-After", "1"), status(200)}
	for i := range 12 {
		r.record(t, taskN(i), journal.Outcome{Success: true})
	}
	r.start(t, Options{Concurrency: 4, BackoffMin: 5 * time.Millisecond, BackoffMax: 10 * time.Millisecond})
	for i := range 12 {
		r.waitState(t, taskN(i), journal.Delivered)
	}
	posts := r.hub.all()
	first := posts[0].at
	for _, p := range posts[1:] {
		// Posts already under way when the 503 came may finish; nothing new
		// may start until Retry-After has passed.
		if gap := p.at.Sub(first); gap > 100*time.Millisecond && gap < 950*time.Millisecond {
			t.Fatalf("post %s started %v after a hub-wide 503 with Retry-After: 1", p.path, gap)
		}
	}
	if len(posts) != 13 {
		t.Fatalf("%d posts, want 13 (12 results, one retried)", len(posts))
	}
}
