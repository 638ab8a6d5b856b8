package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/flip-trust/node/services/dev-hub/internal/flserver"
	"github.com/flip-trust/node/shared/flproto"
	"github.com/flip-trust/node/shared/httpx"
	"github.com/flip-trust/node/shared/safetensors"
)

// FLUsage summarises the fl commands; it is part of Usage.
const FLUsage = `reference FL server (admin API):
  fl client add --name N                  register an FL client; prints FL_CLIENT_NAME, FL_CLIENT_SECRET, FL_SERVER_URL
  fl client list [--json]                 list FL clients with last seen
  fl model init-logreg --features N --out FILE
                                          write a zero logistic-regression model (F32 weight [N], bias [1])
  fl model get JOB_ID --out FILE          download a job's final model
  fl job submit --kind train|evaluate --clients A,B --model FILE|sha256:...
         [--min-clients K] [--rounds R] [--round-timeout 2m] [--job NAME | --image REF@sha256:...]
         [--project-id UUID] [--query SQL | --query-file F] [--params JSON | --params-file F]
         [--net-id N] [--images] [--gpus G] [--memory-mib M] [--cpus C] [--job-timeout 1h]
                                          submit a job (uploads FILE first) and print its id
  fl job list [--json] | show ID [--json] | cancel ID
  fl job wait ID [--timeout 10m] [--interval 500ms]
                                          print each round as it closes; exit 0 when completed, 1 otherwise
`

// artifactTimeout bounds a model upload or download.
const artifactTimeout = 10 * time.Minute

func (c *command) fl(ctx context.Context, args []string) error {
	groups := map[string]map[string]func(context.Context, []string) error{
		"client": {"add": c.flClientAdd, "list": c.flClientList},
		"model":  {"init-logreg": c.flModelInit, "get": c.flModelGet},
		"job":    {"submit": c.flJobSubmit, "list": c.flJobList, "show": c.flJobShow, "wait": c.flJobWait, "cancel": c.flJobCancel},
	}
	if len(args) == 0 {
		return usagef("fl needs one of: client, job, model")
	}
	cmds, ok := groups[args[0]]
	if !ok {
		return usagef("unknown command \"fl\" %q (want one of client, job, model)", args[0])
	}
	return c.sub(ctx, "fl "+args[0], args[1:], cmds)
}

func (c *command) flClientAdd(ctx context.Context, args []string) error {
	fs := c.flags("fl client add")
	name := fs.String("name", "", "client name: the trust's kit slot (Trust_1, ...)")
	asJSON := fs.Bool("json", false, "print the reply as JSON")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := exactly(fs, pos, 0, "no arguments"); err != nil {
		return err
	}
	if *name == "" {
		return usagef("fl client add: --name is required")
	}
	var out flserver.AddClientReply
	if err := c.call(ctx, http.MethodPost, "/admin/fl/clients", flserver.AddClientRequest{Name: *name}, &out); err != nil {
		return err
	}
	if *asJSON {
		return c.printJSON(out)
	}
	_, err = fmt.Fprintf(c.env.Stdout, "# FL client '%s' for the trust's fl-client. The secret is shown once:\n# the server keeps only its SHA-256.\nFL_CLIENT_NAME=%s\nFL_CLIENT_SECRET=%s\nFL_SERVER_URL=%s\n",
		out.Name, out.Name, out.Secret, out.ServerURL)
	return err
}

func (c *command) flClientList(ctx context.Context, args []string) error {
	fs := c.flags("fl client list")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := exactly(fs, pos, 0, "no arguments"); err != nil {
		return err
	}
	var clients []flserver.Client
	if err := c.call(ctx, http.MethodGet, "/admin/fl/clients", nil, &clients); err != nil {
		return err
	}
	if *asJSON {
		return c.printJSON(clients)
	}
	tw := tabwriter.NewWriter(c.env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCREATED\tLAST_SEEN")
	for _, cl := range clients {
		last := "never"
		if cl.LastSeen != nil {
			last = cl.LastSeen.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", cl.Name, cl.CreatedAt.UTC().Format(time.RFC3339), last)
	}
	return tw.Flush()
}

func (c *command) flModelInit(_ context.Context, args []string) error {
	fs := c.flags("fl model init-logreg")
	features := fs.Int("features", 0, "number of input features")
	out := fs.String("out", "", "output file")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := exactly(fs, pos, 0, "no arguments"); err != nil {
		return err
	}
	if *features < 1 || *out == "" {
		return usagef("fl model init-logreg: --features (at least 1) and --out are required")
	}
	w, err := safetensors.FloatTensor("weight", safetensors.F32, []int64{int64(*features)}, make([]float64, *features))
	if err != nil {
		return err
	}
	b, err := safetensors.FloatTensor("bias", safetensors.F32, []int64{1}, []float64{0})
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := safetensors.Encode(&buf, []safetensors.Tensor{w, b}, map[string]string{"model": "logistic-regression"}); err != nil {
		return fmt.Errorf("encode model: %w", err)
	}
	if err := writeFileAtomic(*out, bytes.NewReader(buf.Bytes())); err != nil {
		return err
	}
	sum := sha256.Sum256(buf.Bytes())
	_, err = fmt.Fprintf(c.env.Stdout, "%s %s\n", flproto.ArtifactID(hex.EncodeToString(sum[:])), *out)
	return err
}

// writeFileAtomic writes r to path through a temporary file beside it.
func writeFileAtomic(path string, r io.Reader) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = io.Copy(tmp, r)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// rawRequest sends body (may be nil) to the admin API with the long artifact
// timeout and returns the response, whose body the caller closes.
func (c *command) rawRequest(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	if c.client == nil {
		if err := c.connect(); err != nil {
			return nil, err
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, c.admin+path, body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := httpx.NewClient(artifactTimeout).Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin API: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		var e struct {
			Detail any `json:"detail"`
		}
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(raw, &e) == nil && e.Detail != nil {
			return nil, fmt.Errorf("admin API: %s %s: HTTP %d: %v", method, path, resp.StatusCode, e.Detail)
		}
		return nil, fmt.Errorf("admin API: %s %s: HTTP %d", method, path, resp.StatusCode)
	}
	return resp, nil
}

// uploadModel sends the file at path to the artifact store and returns its id.
func (c *command) uploadModel(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("model: %w", err)
	}
	defer f.Close()
	resp, err := c.rawRequest(ctx, http.MethodPost, "/admin/fl/artifacts", f)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var m flproto.Manifest
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return "", fmt.Errorf("admin API: decode manifest: %w", err)
	}
	return m.ID, nil
}

func (c *command) flModelGet(ctx context.Context, args []string) error {
	fs := c.flags("fl model get")
	out := fs.String("out", "", "output file")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := exactly(fs, pos, 1, "a job ID"); err != nil {
		return err
	}
	if *out == "" {
		return usagef("fl model get: --out is required")
	}
	j, err := c.getFLJob(ctx, pos[0])
	if err != nil {
		return err
	}
	if j.FinalModel == "" {
		return fmt.Errorf("job %s has no final model (state %s)", j.ID, j.State)
	}
	resp, err := c.rawRequest(ctx, http.MethodGet, "/admin/fl/artifacts/"+url.PathEscape(j.FinalModel), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	h := sha256.New()
	if err := writeFileAtomic(*out, io.TeeReader(resp.Body, h)); err != nil {
		return err
	}
	if got := flproto.ArtifactID(hex.EncodeToString(h.Sum(nil))); got != j.FinalModel {
		_ = os.Remove(*out)
		return fmt.Errorf("downloaded model is %s, want %s", got, j.FinalModel)
	}
	_, err = fmt.Fprintf(c.env.Stdout, "%s %s\n", j.FinalModel, *out)
	return err
}

func (c *command) flJobSubmit(ctx context.Context, args []string) error {
	fs := c.flags("fl job submit")
	var req flserver.SubmitRequest
	fs.StringVar(&req.Kind, "kind", "", "train or evaluate")
	clients := fs.String("clients", "", "comma-separated client names")
	fs.IntVar(&req.MinClients, "min-clients", 0, "results a round needs (default: all clients)")
	fs.IntVar(&req.Rounds, "rounds", 0, "rounds (default 1)")
	roundTimeout := fs.Duration("round-timeout", 0, "round timeout (default 10m)")
	model := fs.String("model", "", "initial model: a safetensors file (uploaded) or an artifact id sha256:...")
	fs.StringVar(&req.Job.Name, "job", "", "built-in or site-allowed job name (default "+flproto.BuiltinLogReg+")")
	fs.StringVar(&req.Job.Image, "image", "", "container job image pinned by digest")
	projectID := fs.String("project-id", "", "project id, sealed by the hub into encrypted_project_id (default: a new UUID)")
	query := fs.String("query", "", "the cohort query")
	queryFile := fs.String("query-file", "", "file holding the cohort query")
	params := fs.String("params", "", "job params JSON object")
	paramsFile := fs.String("params-file", "", "file holding the job params JSON object")
	fs.StringVar(&req.Data.NetID, "net-id", "", "net id")
	fs.BoolVar(&req.Data.Images, "images", false, "stage the cohort's images")
	fs.IntVar(&req.Resources.GPUs, "gpus", 0, "GPUs")
	fs.IntVar(&req.Resources.MemoryMiB, "memory-mib", 0, "memory in MiB")
	fs.IntVar(&req.Resources.CPUs, "cpus", 0, "CPUs")
	jobTimeout := fs.Duration("job-timeout", 0, "the job's own timeout")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := exactly(fs, pos, 0, "no arguments"); err != nil {
		return err
	}
	if req.Kind == "" || *clients == "" || *model == "" {
		return usagef("fl job submit: --kind, --clients and --model are required")
	}
	for _, n := range strings.Split(*clients, ",") {
		if n = strings.TrimSpace(n); n != "" {
			req.Clients = append(req.Clients, n)
		}
	}
	if *roundTimeout < 0 || *roundTimeout%time.Second != 0 || *jobTimeout < 0 || *jobTimeout%time.Second != 0 {
		return usagef("fl job submit: --round-timeout and --job-timeout are whole seconds")
	}
	req.RoundTimeoutSeconds = int(*roundTimeout / time.Second)
	req.Resources.TimeoutSeconds = int(*jobTimeout / time.Second)
	if req.Job.Name == "" && req.Job.Image == "" {
		req.Job.Name = flproto.BuiltinLogReg
	}
	if req.Data.Query, err = oneOf("query", *query, *queryFile); err != nil {
		return err
	}
	p, err := oneOf("params", *params, *paramsFile)
	if err != nil {
		return err
	}
	if p != "" {
		req.Params = json.RawMessage(p)
		var obj map[string]json.RawMessage
		if json.Unmarshal(req.Params, &obj) != nil || obj == nil {
			return usagef("fl job submit: the params must be a JSON object")
		}
	}
	req.ProjectID = *projectID
	if req.ProjectID == "" {
		req.ProjectID = uuid.NewString()
	}
	req.Model = *model
	if !flproto.IsArtifactID(*model) {
		if req.Model, err = c.uploadModel(ctx, *model); err != nil {
			return err
		}
	}
	var j flserver.Job
	if err := c.call(ctx, http.MethodPost, "/admin/fl/jobs", req, &j); err != nil {
		return err
	}
	_, err = fmt.Fprintln(c.env.Stdout, j.ID)
	return err
}

// oneOf returns the inline value or the named file's content (at most one).
func oneOf(what, inline, file string) (string, error) {
	if inline != "" && file != "" {
		return "", usagef("fl job submit: give --%s or --%s-file, not both", what, what)
	}
	if file == "" {
		return inline, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", what, err)
	}
	return string(b), nil
}

func (c *command) getFLJob(ctx context.Context, id string) (flserver.Job, error) {
	var j flserver.Job
	if _, err := uuid.Parse(id); err != nil {
		return j, usagef("%q is not a job id", id)
	}
	err := c.call(ctx, http.MethodGet, "/admin/fl/jobs/"+url.PathEscape(id), nil, &j)
	return j, err
}

func (c *command) flJobList(ctx context.Context, args []string) error {
	fs := c.flags("fl job list")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := exactly(fs, pos, 0, "no arguments"); err != nil {
		return err
	}
	var jobs []flserver.JobSummary
	if err := c.call(ctx, http.MethodGet, "/admin/fl/jobs", nil, &jobs); err != nil {
		return err
	}
	if *asJSON {
		return c.printJSON(jobs)
	}
	tw := tabwriter.NewWriter(c.env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tSTATE\tROUND\tCLIENTS\tCREATED")
	for _, j := range jobs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\t%s\n", j.ID, j.Kind, j.State, j.Round, j.Rounds, j.Clients, j.CreatedAt)
	}
	return tw.Flush()
}

// roundLine is one round's progress: clients returned and the metrics.
func roundLine(j flserver.Job, r flserver.Round) string {
	state := "open"
	if r.ClosedAt != nil {
		state = "closed"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "round %d/%d %s: %d of %d clients returned", r.Number, j.Spec.Rounds, state, r.Returned, len(r.Clients))
	if r.ClosedAt != nil {
		fmt.Fprintf(&b, ", %d ok, %d samples", r.OK, r.SampleCount)
	}
	names := make([]string, 0, len(r.Metrics))
	for k := range r.Metrics {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fmt.Fprintf(&b, " %s=%s", k, strconv.FormatFloat(r.Metrics[k], 'g', 6, 64))
	}
	var notOK []string
	for _, cr := range r.Clients {
		if cr.Status != flserver.StatusOK && r.ClosedAt != nil {
			s := cr.Client + ":" + cr.Status
			if cr.Failure != "" {
				s += "/" + cr.Failure
			}
			notOK = append(notOK, s)
		}
	}
	if len(notOK) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(notOK, ", "))
	}
	return b.String()
}

func (c *command) printJob(j flserver.Job) {
	fmt.Fprintf(c.env.Stdout, "job %s (%s) %s, round %d/%d, clients %s (min %d)\n",
		j.ID, j.Spec.Kind, j.State, j.Round, j.Spec.Rounds, strings.Join(j.Spec.Clients, ","), j.Spec.MinClients)
	for _, r := range j.Rounds {
		fmt.Fprintln(c.env.Stdout, "  "+roundLine(j, r))
	}
	if j.FinalModel != "" {
		fmt.Fprintf(c.env.Stdout, "final model %s\n", j.FinalModel)
	}
	if j.Error != "" {
		fmt.Fprintf(c.env.Stdout, "error: %s\n", j.Error)
	}
}

func (c *command) flJobShow(ctx context.Context, args []string) error {
	fs := c.flags("fl job show")
	asJSON := fs.Bool("json", false, "print the job as JSON")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := exactly(fs, pos, 1, "a job ID"); err != nil {
		return err
	}
	j, err := c.getFLJob(ctx, pos[0])
	if err != nil {
		return err
	}
	if *asJSON {
		return c.printJSON(j)
	}
	c.printJob(j)
	return nil
}

func (c *command) flJobCancel(ctx context.Context, args []string) error {
	fs := c.flags("fl job cancel")
	id, err := oneUUID(fs, args, "job")
	if err != nil {
		return err
	}
	var j flserver.Job
	if err := c.call(ctx, http.MethodPost, "/admin/fl/jobs/"+url.PathEscape(id)+"/cancel", nil, &j); err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.env.Stdout, "%s %s\n", j.ID, j.State)
	return err
}

func (c *command) flJobWait(ctx context.Context, args []string) error {
	id, timeout, interval, err := c.waitArgs("fl job wait", args, "a job ID", 10*time.Minute, 500*time.Millisecond)
	if err != nil {
		return err
	}
	printed := 0 // closed rounds already printed
	return c.pollUntil(ctx, timeout, interval, func() (bool, string, error) {
		j, err := c.getFLJob(ctx, id)
		if err != nil {
			return false, "", err
		}
		for printed < len(j.Rounds) && j.Rounds[printed].ClosedAt != nil {
			fmt.Fprintln(c.env.Stdout, roundLine(j, j.Rounds[printed]))
			printed++
		}
		switch j.State {
		case flserver.JobCompleted:
			fmt.Fprintf(c.env.Stdout, "job %s completed", j.ID)
			if j.FinalModel != "" {
				fmt.Fprintf(c.env.Stdout, ", final model %s", j.FinalModel)
			}
			fmt.Fprintln(c.env.Stdout)
			return true, "", nil
		case flserver.JobFailed, flserver.JobCancelled:
			fmt.Fprintf(c.env.Stdout, "job %s %s\n", j.ID, j.State)
			fmt.Fprintf(c.env.Stderr, "dev-hub: fl job %s %s: %s\n", j.ID, j.State, j.Error)
			return true, "", exitCode(1)
		}
		return false, fmt.Sprintf("fl job %s still %s (round %d)", j.ID, j.State, j.Round), nil
	})
}
