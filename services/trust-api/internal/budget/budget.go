// Package budget keeps the trust's per-project privacy budgets: each project
// the site allows differentially private FL jobs for has an (ε, δ) budget,
// and every job spends from it before it runs (docs/egress.md, "Privacy
// budgets").
//
// A job's cost is the Rényi DP of its mechanism (shared/rdp: the sampled
// Gaussian mechanism with the job's noise multiplier, sample rate and
// steps). The store keeps, per project, the RDP curve of everything spent so
// far, composed order by order, so the project's ε after any number of jobs
// is exact RDP composition, not a sum of ε. ε is converted at the budget's
// δ with the standard conversion (rdp.Curve.Epsilon), the conservative one
// that published accountants report.
//
// Spends are committed to a bbolt file, atomically: a spend that would take
// the project past its budget is refused before anything is written, and a
// spend for a (project, job) already recorded returns the first answer
// again without spending twice. After the commit, the spend is written to
// the site's audit ledger through a Recorder.
package budget

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/flip-trust/node/shared/hubapi"
	"github.com/flip-trust/node/shared/rdp"
)

// Sentinel errors; compare with errors.Is.
var (
	// ErrNoBudget: the project has no budget configured and may not spend.
	ErrNoBudget = errors.New("no privacy budget configured for project")
	// ErrExceeded: the spend would take the project past its budget.
	ErrExceeded = errors.New("privacy budget exceeded")
	// ErrInvalid: the spend's parameters are not usable.
	ErrInvalid = errors.New("invalid budget spend")
)

// Ledger channel and kind of a spend's audit entry.
const (
	Channel = "fl_weights"
	Kind    = "dp_spend"
)

// Budget is a project's total (ε, δ).
type Budget struct {
	Epsilon float64 `json:"epsilon"`
	Delta   float64 `json:"delta"`
}

// DefaultDelta is the δ of a budget given without one.
const DefaultDelta = 1e-5

// Budgets maps a project id (a UUID, lower case) to its budget. The site
// policy's [budget."<project uuid>"] tables and PRIVACY_BUDGETS both build
// one.
type Budgets map[string]Budget

// ParseBudgets reads "<project>=<epsilon>[:<delta>]" items separated by
// commas or semicolons (PRIVACY_BUDGETS); δ defaults to DefaultDelta. Every
// bad item is reported.
func ParseBudgets(s string) (Budgets, error) {
	out := Budgets{}
	var errs []error
	for _, item := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ';' }) {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		project, value, ok := strings.Cut(item, "=")
		epsText, deltaText, hasDelta := strings.Cut(value, ":")
		eps, err1 := strconv.ParseFloat(strings.TrimSpace(epsText), 64)
		delta, err2 := DefaultDelta, error(nil)
		if hasDelta {
			delta, err2 = strconv.ParseFloat(strings.TrimSpace(deltaText), 64)
		}
		if !ok || err1 != nil || err2 != nil {
			errs = append(errs, fmt.Errorf("%q is not <project uuid>=<epsilon>[:<delta>]", item))
			continue
		}
		project = strings.ToLower(strings.TrimSpace(project))
		if _, dup := out[project]; dup {
			errs = append(errs, fmt.Errorf("project %s has two budgets", project))
			continue
		}
		out[project] = Budget{Epsilon: eps, Delta: delta}
	}
	if err := out.Validate(); err != nil {
		errs = append(errs, err)
	}
	return out, errors.Join(errs...)
}

// Validate reports every project id that is not a UUID and every budget
// whose ε is not finite and > 0 or whose δ is not in (0, 1).
func (b Budgets) Validate() error {
	projects := make([]string, 0, len(b))
	for p := range b {
		projects = append(projects, p)
	}
	sort.Strings(projects)
	var errs []error
	for _, p := range projects {
		v := b[p]
		if !hubapi.ValidTaskID(p) {
			errs = append(errs, fmt.Errorf("budget project %q is not a UUID", p))
		}
		if !(v.Epsilon > 0) || math.IsInf(v.Epsilon, 0) {
			errs = append(errs, fmt.Errorf("budget of %s: epsilon %v must be a finite number > 0", p, v.Epsilon))
		}
		if !(v.Delta > 0 && v.Delta < 1) {
			errs = append(errs, fmt.Errorf("budget of %s: delta %v must lie in (0, 1)", p, v.Delta))
		}
	}
	return errors.Join(errs...)
}

// Entry is the audit record of one spend, for the site's ledger: channel
// fl_weights, kind dp_spend, the project, the job as task id, and rules
// naming the mechanism and the ε spent ("epsilon_job=0.42", …).
type Entry struct {
	Channel string
	Kind    string
	Project string
	TaskID  string
	Time    time.Time
	Rules   []string
}

// Recorder writes audit entries (the ledger). Append returns once the entry
// is durable; it must be safe for concurrent use.
type Recorder interface {
	Append(ctx context.Context, e Entry) error
}

// Spend is a job's request to spend from its project's budget.
type Spend struct {
	Project string
	JobID   string
	// NoiseMultiplier is σ: the noise's standard deviation over the clipping
	// norm.
	NoiseMultiplier float64
	// SampleRate is q: the share of the records each step uses (1 for one
	// full-batch update per round).
	SampleRate float64
	// Steps is how many noised updates the job makes in all its rounds.
	Steps int64
	// Delta is the δ the job asks for; 0 means the budget's. It may not be
	// larger than the budget's.
	Delta float64
}

// Receipt is the answer to a spend, the same for every retry of it.
type Receipt struct {
	Project string `json:"project"`
	JobID   string `json:"job_id"`
	// EpsilonJob is this job's ε on its own, at Delta.
	EpsilonJob float64 `json:"epsilon_job"`
	// EpsilonSpent is the project's ε with this job, all its jobs composed.
	EpsilonSpent float64 `json:"epsilon_spent"`
	// EpsilonRemaining is the budget's ε less EpsilonSpent.
	EpsilonRemaining float64 `json:"epsilon_remaining"`
	EpsilonBudget    float64 `json:"epsilon_budget"`
	Delta            float64 `json:"delta"`
	// Repeat is set when the job had already spent: nothing more was spent.
	Repeat bool      `json:"repeat,omitempty"`
	Time   time.Time `json:"time"`
}

// ExceededError is a refused spend, with the figures behind the refusal.
type ExceededError struct {
	Project                             string
	EpsilonJob, EpsilonAfter, Remaining float64
	Budget                              Budget
}

func (e *ExceededError) Error() string {
	return fmt.Sprintf("%s: project %s has ε %.4g of %.4g left (δ=%g); this job needs ε %.4g alone and would bring the project to ε %.4g",
		ErrExceeded, e.Project, e.Remaining, e.Budget.Epsilon, e.Budget.Delta, e.EpsilonJob, e.EpsilonAfter)
}

// Unwrap makes errors.Is(err, ErrExceeded) hold.
func (e *ExceededError) Unwrap() error { return ErrExceeded }

// Status is a project's budget as spent so far (audit show --budget).
type Status struct {
	Project          string  `json:"project"`
	EpsilonBudget    float64 `json:"epsilon_budget"`
	Delta            float64 `json:"delta"`
	EpsilonSpent     float64 `json:"epsilon_spent"`
	EpsilonRemaining float64 `json:"epsilon_remaining"`
	Jobs             int     `json:"jobs"`
	// Configured is false for a project with spends but no budget any more.
	Configured bool `json:"configured"`
}

var (
	bucketProjects = []byte("projects")
	bucketSpends   = []byte("spends")
)

// project is a project's stored state.
type project struct {
	Curve rdp.Curve `json:"curve"`
	Jobs  int       `json:"jobs"`
}

// spend is a job's stored spend.
type spend struct {
	Receipt
	NoiseMultiplier float64   `json:"noise_multiplier"`
	SampleRate      float64   `json:"sample_rate"`
	Steps           int64     `json:"steps"`
	Curve           rdp.Curve `json:"curve"`
	// Recorded is set once the audit entry is written.
	Recorded bool `json:"recorded"`
}

// Options tune a Store; the zero value is usable.
type Options struct {
	// Recorder receives an audit entry for each spend; nil skips it.
	Recorder Recorder
	// LockTimeout bounds the wait for another process's file lock (5 s).
	LockTimeout time.Duration
	// Now replaces time.Now in tests.
	Now func() time.Time
}

// Store is the bbolt-backed budget store. It is safe for concurrent use;
// spends are serialised by bbolt's single writer.
type Store struct {
	db      *bolt.DB
	budgets Budgets
	rec     Recorder
	now     func() time.Time
}

// Open opens (creating if needed) the store at path with the site's
// budgets, which must be valid.
func Open(path string, budgets Budgets, opts Options) (*Store, error) {
	if err := budgets.Validate(); err != nil {
		return nil, err
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	if err != nil {
		return nil, fmt.Errorf("open budget store %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketProjects, bucketSpends} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("init budget store %s: %w", path, err)
	}
	b := make(Budgets, len(budgets))
	for p, v := range budgets {
		b[strings.ToLower(p)] = v
	}
	return &Store{db: db, budgets: b, rec: opts.Recorder, now: opts.Now}, nil
}

// Close closes the file.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close budget store: %w", err)
	}
	return nil
}

func spendKey(project, job string) []byte { return []byte(project + "\x00" + job) }

// validate reports every bad field of sp at once, by its JSON name.
func (sp Spend) validate() error {
	var errs []string
	if sp.Project == "" {
		errs = append(errs, "project: required")
	}
	if sp.JobID == "" || len(sp.JobID) > 128 || strings.ContainsFunc(sp.JobID, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		errs = append(errs, "job_id: required, at most 128 printable characters")
	}
	if !(sp.NoiseMultiplier > 0) || math.IsInf(sp.NoiseMultiplier, 0) {
		errs = append(errs, "noise_multiplier: must be a finite number > 0")
	}
	if !(sp.SampleRate > 0 && sp.SampleRate <= 1) {
		errs = append(errs, "sample_rate: must lie in (0, 1]")
	}
	if sp.Steps < 1 || sp.Steps > 1_000_000_000 {
		errs = append(errs, "steps: must be an integer between 1 and 1000000000")
	}
	if sp.Delta != 0 && !(sp.Delta > 0 && sp.Delta < 1) {
		errs = append(errs, "delta: must lie in (0, 1), or be left out for the budget's")
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(errs, "; "))
	}
	return nil
}

// Spend spends sp's cost from its project's budget, or refuses. It returns
// an error wrapping ErrInvalid (bad parameters), ErrNoBudget, or
// ErrExceeded (an *ExceededError; nothing is recorded). A job that already
// spent gets its first receipt again, with Repeat set. A recorded spend is
// then written to the ledger; a ledger failure is returned (the spend stays
// recorded and a retry writes the entry).
func (s *Store) Spend(ctx context.Context, sp Spend) (Receipt, error) {
	sp.Project = strings.ToLower(strings.TrimSpace(sp.Project))
	if err := sp.validate(); err != nil {
		return Receipt{}, err
	}
	var out spend
	err := s.db.Update(func(tx *bolt.Tx) error {
		spends, projects := tx.Bucket(bucketSpends), tx.Bucket(bucketProjects)
		key := spendKey(sp.Project, sp.JobID)
		if raw := spends.Get(key); raw != nil {
			if err := json.Unmarshal(raw, &out); err != nil {
				return fmt.Errorf("decode spend of job %s: %w", sp.JobID, err)
			}
			out.Repeat = true
			return nil
		}
		budget, ok := s.budgets[sp.Project]
		if !ok {
			return fmt.Errorf("%w %s", ErrNoBudget, sp.Project)
		}
		delta := sp.Delta
		if delta == 0 {
			delta = budget.Delta
		}
		if delta > budget.Delta {
			return fmt.Errorf("%w: delta: %g is larger than the project budget's %g", ErrInvalid, delta, budget.Delta)
		}
		var prev project
		if raw := projects.Get([]byte(sp.Project)); raw != nil {
			if err := json.Unmarshal(raw, &prev); err != nil {
				return fmt.Errorf("decode budget state of project %s: %w", sp.Project, err)
			}
		}
		job, err := rdp.SampledGaussian(sp.SampleRate, sp.NoiseMultiplier, sp.Steps, nil)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		epsJob, _, err := job.Epsilon(delta)
		if err != nil {
			return err
		}
		total := prev.Curve.Compose(job)
		after, _, err := total.Epsilon(budget.Delta)
		if err != nil {
			return err
		}
		before, _, err := prev.Curve.Epsilon(budget.Delta)
		if err != nil {
			return err
		}
		if prev.Curve.Empty() {
			before = 0 // the conversion's floor is not a spend
		}
		if after > budget.Epsilon {
			return &ExceededError{Project: sp.Project, EpsilonJob: epsJob, EpsilonAfter: after,
				Remaining: max(budget.Epsilon-before, 0), Budget: budget}
		}
		out = spend{
			Receipt: Receipt{Project: sp.Project, JobID: sp.JobID, EpsilonJob: epsJob, EpsilonSpent: after,
				EpsilonRemaining: budget.Epsilon - after, EpsilonBudget: budget.Epsilon, Delta: delta, Time: s.now().UTC()},
			NoiseMultiplier: sp.NoiseMultiplier, SampleRate: sp.SampleRate, Steps: sp.Steps, Curve: job,
		}
		state, err := json.Marshal(project{Curve: total, Jobs: prev.Jobs + 1})
		if err != nil {
			return err
		}
		rec, err := json.Marshal(out)
		if err != nil {
			return err
		}
		if err := projects.Put([]byte(sp.Project), state); err != nil {
			return err
		}
		return spends.Put(key, rec)
	})
	if err != nil {
		return Receipt{}, err
	}
	if !out.Recorded && s.rec != nil {
		if err := s.record(ctx, out); err != nil {
			return Receipt{}, err
		}
	}
	return out.Receipt, nil
}

// record writes sp's audit entry and marks it written.
func (s *Store) record(ctx context.Context, sp spend) error {
	e := Entry{Channel: Channel, Kind: Kind, Project: sp.Project, TaskID: sp.JobID, Time: sp.Time, Rules: []string{
		"epsilon_job=" + fmtFloat(sp.EpsilonJob), "epsilon_spent=" + fmtFloat(sp.EpsilonSpent),
		"epsilon_budget=" + fmtFloat(sp.EpsilonBudget), "delta=" + fmtFloat(sp.Delta),
		"noise_multiplier=" + fmtFloat(sp.NoiseMultiplier), "sample_rate=" + fmtFloat(sp.SampleRate),
		"steps=" + strconv.FormatInt(sp.Steps, 10), "accountant=rdp-sampled-gaussian",
	}}
	if err := s.rec.Append(ctx, e); err != nil {
		return fmt.Errorf("ledger the budget spend of job %s: %w", sp.JobID, err)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSpends)
		key := spendKey(sp.Project, sp.JobID)
		var cur spend
		if err := json.Unmarshal(b.Get(key), &cur); err != nil {
			return fmt.Errorf("decode spend of job %s: %w", sp.JobID, err)
		}
		cur.Recorded = true
		raw, err := json.Marshal(cur)
		if err != nil {
			return err
		}
		return b.Put(key, raw)
	})
}

func fmtFloat(f float64) string { return strconv.FormatFloat(f, 'g', 6, 64) }

// Remaining returns project's budget and what its jobs have spent, composed.
// A project with neither a budget nor spends is ErrNoBudget.
func (s *Store) Remaining(projectID string) (Status, error) {
	projectID = strings.ToLower(strings.TrimSpace(projectID))
	var st project
	found := false
	err := s.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketProjects).Get([]byte(projectID))
		if raw == nil {
			return nil
		}
		found = true
		return json.Unmarshal(raw, &st)
	})
	if err != nil {
		return Status{}, fmt.Errorf("read budget state of project %s: %w", projectID, err)
	}
	budget, configured := s.budgets[projectID]
	if !configured && !found {
		return Status{}, fmt.Errorf("%w %s", ErrNoBudget, projectID)
	}
	out := Status{Project: projectID, EpsilonBudget: budget.Epsilon, Delta: budget.Delta, Jobs: st.Jobs, Configured: configured}
	if !configured {
		out.Delta = DefaultDelta
	}
	if !st.Curve.Empty() {
		eps, _, err := st.Curve.Epsilon(out.Delta)
		if err != nil {
			return Status{}, err
		}
		out.EpsilonSpent = eps
	}
	out.EpsilonRemaining = max(out.EpsilonBudget-out.EpsilonSpent, 0)
	return out, nil
}

// Projects lists every project with a budget or a spend, sorted.
func (s *Store) Projects() ([]string, error) {
	seen := map[string]bool{}
	for p := range s.budgets {
		seen[p] = true
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketProjects).ForEach(func(k, _ []byte) error {
			seen[string(k)] = true
			return nil
		})
	})
	out := make([]string, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return out, err
}
