package task

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/flip-trust/node/services/fl-client/internal/gate"
	"github.com/flip-trust/node/shared/flproto"
)

// fakeGate stands in for trust-api's egress gate; the HTTP client itself is
// tested in package gate.
type fakeGate struct {
	mu       sync.Mutex
	spends   []gate.Spend
	items    []gate.Item
	spendErr error
	// refuse maps a channel to the refusal its items get.
	refuse map[string]error
}

func (g *fakeGate) Spend(_ context.Context, s gate.Spend) (gate.Receipt, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.spends = append(g.spends, s)
	return gate.Receipt{EpsilonJob: 1, EpsilonSpent: 1, EpsilonRemaining: 7}, g.spendErr
}

func (g *fakeGate) Release(_ context.Context, it gate.Item) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if it.Path != "" {
		b, err := os.ReadFile(it.Path)
		if err != nil {
			return err
		}
		it.Content, it.Path = b, ""
	}
	g.items = append(g.items, it)
	return g.refuse[it.Channel]
}

// countingStager counts the data it stages.
type countingStager struct {
	stager
	calls atomic.Int32
}

func (c *countingStager) Dataframe(ctx context.Context, d flproto.DataRef, dst string) (int64, error) {
	c.calls.Add(1)
	return c.stager.Dataframe(ctx, d, dst)
}

func TestBudgetRefusalFailsBeforeAnyData(t *testing.T) {
	t.Parallel()
	s := &server{}
	st := &countingStager{}
	g := &fakeGate{spendErr: fmt.Errorf("%w: privacy budget exceeded: project p has ε 0.5 of 8 left", gate.ErrRefused)}
	e := executor(t, s, stager{}, job{metrics: `{"loss":0.5,"sample_count":40}`, model: true})
	e.Stager, e.Gate, e.NoiseMultiplier, e.ClipNorm = st, g, 1.1, 1
	tk := task(flproto.KindTrain)
	tk.Rounds, tk.Data.EncryptedProjectID = 3, "sealed-project"
	res, err := e.Execute(context.Background(), tk)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != flproto.StatusFailed || res.Failure != flproto.FailureRefused || !strings.Contains(res.Error, "privacy budget exceeded") {
		t.Fatalf("result = %+v", res)
	}
	if st.calls.Load() != 0 || len(s.uploads) != 0 || len(g.items) != 0 {
		t.Errorf("after the refusal: %d data stagings, %d uploads, %d egress items", st.calls.Load(), len(s.uploads), len(g.items))
	}
	want := gate.Spend{EncryptedProjectID: "sealed-project", JobID: "j", NoiseMultiplier: 1.1, SampleRate: 1, Steps: 3}
	if len(g.spends) != 1 || g.spends[0] != want {
		t.Errorf("spend %+v, want %+v", g.spends, want)
	}
}

// contentServer names uploads by their content, as the FL server does.
type contentServer struct {
	*server
	released func() int
	order    []int
}

func (c *contentServer) Upload(ctx context.Context, path string, n int64) (string, error) {
	c.order = append(c.order, c.released())
	if _, err := c.server.Upload(ctx, path, n); err != nil {
		return "", err
	}
	return artifactID(path)
}

func TestTrainReleasesUpdateAndResultBeforeUpload(t *testing.T) {
	t.Parallel()
	g := &fakeGate{}
	s := &contentServer{server: &server{}, released: func() int { g.mu.Lock(); defer g.mu.Unlock(); return len(g.items) }}
	e := executor(t, s.server, stager{}, job{metrics: `{"loss":0.5,"sample_count":40}`, model: true})
	e.Server, e.Gate, e.NoiseMultiplier, e.ClipNorm = s, g, 1.1, 1
	res, err := e.Execute(context.Background(), task(flproto.KindTrain))
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != flproto.StatusOK || !strings.HasPrefix(res.Update, "sha256:") {
		t.Fatalf("result %+v", res)
	}
	if len(g.spends) != 1 || len(g.items) != 2 || len(s.order) != 1 || s.order[0] != 2 {
		t.Fatalf("%d spends, %d items, released before each upload: %v", len(g.spends), len(g.items), s.order)
	}
	w, m := g.items[0], g.items[1]
	if w.Channel != gate.ChannelWeights || string(w.Content) != "local-global" || w.TaskID != "t-1" {
		t.Errorf("weights item %+v", w)
	}
	// The metrics item is the result exactly as it is submitted.
	sent, _ := json.Marshal(res)
	if m.Channel != gate.ChannelMetrics || string(m.Content) != string(sent) {
		t.Errorf("metrics item %s, submitted %s", m.Content, sent)
	}

	// An upload the server stores under another id than the one released
	// fails the task: the released result must name what the server holds.
	e2 := executor(t, &server{}, stager{}, job{metrics: `{"loss":0.5,"sample_count":40}`, model: true})
	e2.Gate = &fakeGate{}
	if res, _ := e2.Execute(context.Background(), task(flproto.KindTrain)); res.Status != flproto.StatusFailed || !strings.Contains(res.Error, "not the released") {
		t.Errorf("an update stored under another id: %+v", res)
	}
}

func TestEgressRefusalSendsNothing(t *testing.T) {
	t.Parallel()
	for _, ch := range []string{gate.ChannelWeights, gate.ChannelMetrics} {
		s := &server{}
		g := &fakeGate{refuse: map[string]error{ch: fmt.Errorf("%w: item 1: rejected by the site's reviewer: too detailed", gate.ErrRefused)}}
		e := executor(t, s, stager{}, job{metrics: `{"loss":0.5,"sample_count":40}`, model: true})
		e.Gate = g
		res, err := e.Execute(context.Background(), task(flproto.KindTrain))
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != flproto.StatusFailed || res.Failure != flproto.FailureRefused || !strings.Contains(res.Error, "too detailed") {
			t.Errorf("%s refused: result %+v", ch, res)
		}
		if len(s.uploads) != 0 || len(g.spends) != 0 {
			t.Errorf("%s refused: %d uploads; %d spends without noise", ch, len(s.uploads), len(g.spends))
		}
	}
	g := &fakeGate{refuse: map[string]error{gate.ChannelMetrics: fmt.Errorf("%w: refused by site egress policy", gate.ErrRefused)}}
	e := executor(t, &server{}, stager{}, job{metrics: `{"auc":0.7,"sample_count":40}`})
	e.Gate = g
	res, _ := e.Execute(context.Background(), task(flproto.KindEvaluate))
	if res.Status != flproto.StatusFailed || res.Failure != flproto.FailureRefused || len(res.Metrics) != 0 {
		t.Errorf("evaluate metrics refused: %+v", res)
	}
}
