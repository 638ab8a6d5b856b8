package flserver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/flip-trust/node/shared/flproto"
)

// Job states.
const (
	JobPending   = "pending"
	JobRunning   = "running"
	JobCompleted = "completed"
	JobFailed    = "failed"
	JobCancelled = "cancelled"
)

// Per-client statuses within a round.
const (
	StatusAssigned = "assigned" // task created, not handed out yet
	StatusRunning  = "running"  // handed out, no result yet
	StatusOK       = flproto.StatusOK
	StatusFailed   = flproto.StatusFailed
	StatusMissing  = "missing" // the round closed without a result
)

// FailureRejected is the failure class the server records when it refuses an
// accepted update at aggregation (names, shapes or dtypes differ from the
// global model's).
const FailureRejected = "rejected"

// countMetrics are summed across clients rather than averaged.
var countMetrics = map[string]bool{"tp": true, "fp": true, "tn": true, "fn": true, "sample_count": true}

// JobSpec is what a job submission names.
type JobSpec struct {
	Kind                string            `json:"kind"`
	Clients             []string          `json:"clients"`
	MinClients          int               `json:"min_clients,omitempty"`
	Rounds              int               `json:"rounds,omitempty"`
	RoundTimeoutSeconds int               `json:"round_timeout_seconds,omitempty"`
	Model               string            `json:"model"`
	Job                 flproto.JobRef    `json:"job"`
	Data                flproto.DataRef   `json:"data"`
	Resources           flproto.Resources `json:"resources"`
	Params              json.RawMessage   `json:"params,omitempty"`
}

// Job is a submitted job, its state and its rounds.
type Job struct {
	ID         string             `json:"id"`
	Spec       JobSpec            `json:"spec"`
	State      string             `json:"state"`
	Round      int                `json:"round"` // current (or last) round, 0 before the first opens
	Model      string             `json:"model"` // the current global model
	FinalModel string             `json:"final_model,omitempty"`
	Metrics    map[string]float64 `json:"metrics,omitempty"` // the last closed round's
	Error      string             `json:"error,omitempty"`
	CreatedAt  time.Time          `json:"created_at"`
	StartedAt  *time.Time         `json:"started_at,omitempty"`
	FinishedAt *time.Time         `json:"finished_at,omitempty"`
	Rounds     []Round            `json:"rounds"`
}

// Round is one round of a job.
type Round struct {
	Number      int                `json:"number"`
	Model       string             `json:"model"` // the global model handed out
	OpenedAt    time.Time          `json:"opened_at"`
	Deadline    time.Time          `json:"deadline"`
	ClosedAt    *time.Time         `json:"closed_at,omitempty"`
	Returned    int                `json:"returned"` // clients that answered, ok or failed
	OK          int                `json:"ok"`       // ok results used
	SampleCount int64              `json:"sample_count"`
	Metrics     map[string]float64 `json:"metrics,omitempty"`
	NewModel    string             `json:"new_model,omitempty"`
	Clients     []ClientRound      `json:"clients"`
}

// ClientRound is one client's share of a round: its task and what became of
// it. Status, Failure and Error are the server's verdict; Result is what the
// client sent.
type ClientRound struct {
	Client      string          `json:"client"`
	Task        string          `json:"task"`
	Status      string          `json:"status"`
	Failure     string          `json:"failure,omitempty"`
	Error       string          `json:"error,omitempty"`
	HandedOutAt *time.Time      `json:"handed_out_at,omitempty"`
	Handouts    int             `json:"handouts"`
	ResultAt    *time.Time      `json:"result_at,omitempty"`
	Result      *flproto.Result `json:"result,omitempty"`
}

// Terminal reports whether the job has finished.
func (j *Job) Terminal() bool {
	return j.State == JobCompleted || j.State == JobFailed || j.State == JobCancelled
}

func (j *Job) current() *Round {
	if j.Round < 1 || j.Round > len(j.Rounds) {
		return nil
	}
	return &j.Rounds[j.Round-1]
}

// ValidationError lists every problem of a submission or a result, each
// prefixed with its field path.
type ValidationError struct {
	Problems []string
}

func (e *ValidationError) Error() string { return "invalid: " + strings.Join(e.Problems, "; ") }

var (
	imagePattern   = regexp.MustCompile(`^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$`)
	jobNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_./-]{0,127}$`)
)

// validate checks spec against the registered clients and the artifacts and
// fills its defaults; the caller holds s.mu.
func (s *Server) validate(spec *JobSpec) error {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	switch spec.Kind {
	case flproto.KindTrain:
		if spec.Rounds == 0 {
			spec.Rounds = 1
		}
		if spec.Rounds < 1 {
			add("rounds: must be at least 1")
		}
	case flproto.KindEvaluate:
		if spec.Rounds == 0 {
			spec.Rounds = 1
		}
		if spec.Rounds != 1 {
			add("rounds: an evaluate job has exactly 1 round")
		}
	default:
		add("kind: must be %q or %q", flproto.KindTrain, flproto.KindEvaluate)
	}
	if len(spec.Clients) == 0 {
		add("clients: at least one client is required")
	}
	seen := map[string]bool{}
	for i, c := range spec.Clients {
		switch {
		case !ClientNamePattern.MatchString(c):
			add("clients[%d]: %q must match %s", i, c, ClientNamePattern)
		case seen[c]:
			add("clients[%d]: %q appears twice", i, c)
		case s.clients[c] == nil:
			add("clients[%d]: %q is not a registered client", i, c)
		}
		seen[c] = true
	}
	if spec.MinClients == 0 {
		spec.MinClients = len(spec.Clients)
	}
	if spec.MinClients < 1 || spec.MinClients > len(spec.Clients) {
		add("min_clients: must be between 1 and the number of clients (%d)", len(spec.Clients))
	}
	if spec.RoundTimeoutSeconds == 0 {
		spec.RoundTimeoutSeconds = int(DefaultRoundTimeout / time.Second)
	}
	if spec.RoundTimeoutSeconds < 1 || spec.RoundTimeoutSeconds > int(MaxRoundTimeout/time.Second) {
		add("round_timeout_seconds: must be between 1 and %d", int(MaxRoundTimeout/time.Second))
	}
	switch {
	case !flproto.IsArtifactID(spec.Model):
		add("model: must be an artifact id sha256:<64 hex digits>")
	case s.arts != nil && !s.arts.Has(spec.Model):
		add("model: artifact %s does not exist", spec.Model)
	}
	switch {
	case (spec.Job.Name == "") == (spec.Job.Image == ""):
		add("job: give exactly one of job.name and job.image")
	case spec.Job.Name != "" && !jobNamePattern.MatchString(spec.Job.Name):
		add("job.name: must match %s", jobNamePattern)
	case spec.Job.Image != "" && !imagePattern.MatchString(spec.Job.Image):
		add("job.image: must be an image reference pinned by digest (ref@sha256:<64 hex digits>)")
	}
	if strings.TrimSpace(spec.Data.EncryptedProjectID) == "" {
		add("data.encrypted_project_id: is required")
	}
	if strings.TrimSpace(spec.Data.Query) == "" {
		add("data.query: is required")
	}
	for name, v := range map[string]int{
		"resources.gpus": spec.Resources.GPUs, "resources.gpu_memory_mib": spec.Resources.GPUMemoryMiB,
		"resources.memory_mib": spec.Resources.MemoryMiB, "resources.cpus": spec.Resources.CPUs,
		"resources.timeout_seconds": spec.Resources.TimeoutSeconds,
	} {
		if v < 0 {
			add("%s: must not be negative", name)
		}
	}
	if len(bytes.TrimSpace(spec.Params)) > 0 {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(spec.Params, &obj); err != nil || obj == nil {
			add("params: must be a JSON object")
		}
	} else {
		spec.Params = nil
	}
	if len(p) > 0 {
		sort.Strings(p)
		return &ValidationError{Problems: p}
	}
	return nil
}

// Submit validates spec and records a pending job; the round engine starts
// it at once. A *ValidationError lists every bad field.
func (s *Server) Submit(spec JobSpec) (Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.validate(&spec); err != nil {
		return Job{}, err
	}
	j := &Job{
		ID: uuid.NewString(), Spec: spec, State: JobPending, Model: spec.Model,
		CreatedAt: s.cfg.Now().UTC(), Rounds: []Round{},
	}
	if err := s.save(j); err != nil {
		return Job{}, err
	}
	s.jobs[j.ID] = j
	s.order = append(s.order, j.ID)
	s.wake()
	s.logger.Info("fl job submitted", "job_id", j.ID, "kind", spec.Kind, "clients", len(spec.Clients), "rounds", spec.Rounds)
	return clone(j), nil
}

// Job returns a copy of the job id.
func (s *Server) Job(id string) (Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobs[id]
	if !ok {
		return Job{}, fmt.Errorf("%w: %s", ErrJobNotFound, id)
	}
	return clone(j), nil
}

// Jobs returns copies of every job, oldest first.
func (s *Server) Jobs() []Job {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Job, 0, len(s.order))
	for _, id := range s.order {
		out = append(out, clone(s.jobs[id]))
	}
	return out
}

// Cancel stops a pending or running job: its open round closes without
// aggregation and heartbeats of its tasks answer cancel. A finished job
// gives ErrJobFinished.
func (s *Server) Cancel(id string) (Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobs[id]
	if !ok {
		return Job{}, fmt.Errorf("%w: %s", ErrJobNotFound, id)
	}
	if j.Terminal() {
		return Job{}, fmt.Errorf("%w: job %s is %s", ErrJobFinished, id, j.State)
	}
	now := s.cfg.Now().UTC()
	err := s.update(j, func(j *Job) {
		if r := j.current(); r != nil && r.ClosedAt == nil {
			closeClients(r, now)
		}
		j.State, j.Error, j.FinishedAt = JobCancelled, "cancelled by the operator", &now
	})
	if err != nil {
		return Job{}, err
	}
	s.logger.Info("fl job cancelled", "job_id", id)
	return clone(s.jobs[id]), nil
}

// closeClients marks every unanswered client of r missing and closes r.
func closeClients(r *Round, now time.Time) {
	for i := range r.Clients {
		if st := r.Clients[i].Status; st == StatusAssigned || st == StatusRunning {
			r.Clients[i].Status = StatusMissing
		}
	}
	r.ClosedAt = &now
}

// clone deep-copies j.
func clone(j *Job) Job {
	b, err := json.Marshal(j)
	if err != nil {
		// Job holds only JSON-encodable values.
		return *j
	}
	var out Job
	if err := json.Unmarshal(b, &out); err != nil {
		return *j
	}
	return out
}

// update applies fn to a copy of j, persists the copy, and only then makes it
// the live job; the caller holds s.mu. On error j is unchanged.
func (s *Server) update(j *Job, fn func(*Job)) error {
	c := clone(j)
	fn(&c)
	if err := s.save(&c); err != nil {
		return err
	}
	*j = c
	return nil
}

// save persists j; the caller holds s.mu.
func (s *Server) save(j *Job) error {
	v, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("encode job: %w", err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketJobs).Put([]byte(j.ID), v)
	}); err != nil {
		return fmt.Errorf("save job %s: %w", j.ID, err)
	}
	return nil
}
