// Package cli is the dev-hub command line: `serve` and `standin` run the
// servers; `trust`, `task`, `results` and `fl` talk to a running hub's admin API
// (--admin URL, default $DEV_HUB_ADMIN_URL or http://127.0.0.1:8081, with the
// bearer token from DEV_HUB_ADMIN_TOKEN or DEV_HUB_ADMIN_TOKEN_FILE); `seal`
// encrypts a value under the hub's shared key (AES_KEY_BASE64 or
// AES_KEY_BASE64_FILE) as the hub does for the payloads it builds.
//
// Run returns the process exit code: 0 success, 1 failure (including a task
// that ends FAILED or a wait that times out), 2 a usage error.
package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/flip-trust/node/services/dev-hub/internal/admin"
	"github.com/flip-trust/node/shared/config"
	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/httpx"
	"github.com/flip-trust/node/shared/hubapi"
)

// DefaultAdminURL is the admin API the commands call when neither --admin nor
// DEV_HUB_ADMIN_URL names one.
const DefaultAdminURL = "http://127.0.0.1:" + DefaultAdminPort

// DefaultAdminPort is the admin API's port when DEV_HUB_ADMIN_ADDR names none.
const DefaultAdminPort = "8081"

// Usage is the command summary printed for -h and usage errors.
const Usage = `usage: dev-hub [--admin URL] <command> [flags]
       dev-hub -health                    probe the admin API's /health on loopback (container healthcheck)

servers:
  serve                                   run the hub API (DEV_HUB_ADDR) and the admin API (DEV_HUB_ADMIN_ADDR)
  standin                                 run the stand-in data-access-api/imaging-api (STANDIN_ADDR)

admin commands (--admin URL, default $DEV_HUB_ADMIN_URL or ` + DefaultAdminURL + `; token $DEV_HUB_ADMIN_TOKEN):
  trust add --name N [--hub-url URL] [--code C] [--region R] [--json]
                                          register a trust and print its kit .env
  trust list [--json]                     list trusts with liveness and health snapshot
  task submit --trust N --type T (--payload JSON | --payload-file F)
  task submit --trust N [--type cohort_query] --sql SQL [--project-id UUID] [--query-name X] [--query-id UUID]
                                          enqueue a task and print its id
  task list [--trust N] [--status S] [--json]
  task show ID                            print a task as JSON
  task wait ID [--timeout 60s] [--interval 200ms]
                                          wait for a task: exit 0 when COMPLETED, 1 when FAILED or on timeout
  task cancel ID                          cancel a PENDING task
  results [--query-id ID]                 print the cohort results received for a query

` + FLUsage + `
local (key $AES_KEY_BASE64, the hub's shared key):
  seal [--context C] TEXT                 print TEXT sealed in FLIP's envelope under context C
                                          (default project_id: an encrypted_project_id as the hub sends it)
`

// Servers runs the long-lived subcommands; main's composition supplies them.
type Servers struct {
	Serve   func(ctx context.Context) error
	Standin func(ctx context.Context) error
}

// Env is what a command reads from its surroundings.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	Servers        Servers
}

// usageError is a mistake in the command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitCode carries a non-zero exit status that is not a usage error, with a
// message already printed.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// Run executes args (without the program name) and returns the exit code.
func Run(ctx context.Context, args []string, env Env) int {
	if env.Getenv == nil {
		env.Getenv = func(string) string { return "" }
	}
	err := run(ctx, args, env)
	var ue *usageError
	var code exitCode
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(env.Stdout, Usage)
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(env.Stderr, "dev-hub: %s\n\n%s", ue.msg, Usage)
		return 2
	case errors.As(err, &code):
		return int(code)
	default:
		fmt.Fprintf(env.Stderr, "dev-hub: %v\n", err)
		return 1
	}
}

type command struct {
	env    Env
	admin  string
	client *http.Client
	token  string
}

func run(ctx context.Context, args []string, env Env) error {
	global := flag.NewFlagSet("dev-hub", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	adminURL := global.String("admin", "", "admin API URL")
	probe := httpx.HealthFlag(global)
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("%v", err)
	}
	if *probe {
		// The container healthcheck: the admin listener's /health on loopback.
		if code := httpx.ProbeHealth(ctx, httpx.LocalHealthURL(env.Getenv("DEV_HUB_ADMIN_ADDR"), DefaultAdminPort)); code != 0 {
			return exitCode(code)
		}
		return nil
	}
	rest := global.Args()
	if len(rest) == 0 {
		return usagef("no command given")
	}
	c := &command{env: env, admin: *adminURL}
	name, rest := rest[0], rest[1:]
	switch name {
	case "serve", "standin":
		if len(rest) > 0 {
			return usagef("%s takes no arguments (it is configured by the environment)", name)
		}
		fn := env.Servers.Serve
		if name == "standin" {
			fn = env.Servers.Standin
		}
		if fn == nil {
			return fmt.Errorf("%s is not available in this build", name)
		}
		return fn(ctx)
	case "trust":
		return c.sub(ctx, "trust", rest, map[string]func(context.Context, []string) error{
			"add": c.trustAdd, "list": c.trustList,
		})
	case "task":
		return c.sub(ctx, "task", rest, map[string]func(context.Context, []string) error{
			"submit": c.taskSubmit, "list": c.taskList, "show": c.taskShow, "wait": c.taskWait, "cancel": c.taskCancel,
		})
	case "results":
		return c.results(ctx, rest)
	case "fl":
		return c.fl(ctx, rest)
	case "seal":
		return c.seal(rest)
	case "help":
		return flag.ErrHelp
	}
	return usagef("unknown command %q", name)
}

func (c *command) sub(ctx context.Context, group string, args []string, cmds map[string]func(context.Context, []string) error) error {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(args) == 0 {
		return usagef("%s needs a subcommand: %s", group, strings.Join(names, ", "))
	}
	fn, ok := cmds[args[0]]
	if !ok {
		return usagef("unknown command %q %q (want one of %s)", group, args[0], strings.Join(names, ", "))
	}
	return fn(ctx, args[1:])
}

// flags returns a flag set for a subcommand with the shared --admin flag.
func (c *command) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Func("admin", "admin API URL", func(s string) error { c.admin = s; return nil })
	return fs
}

// parse parses flags that may come before or after positional arguments and
// returns the positional ones.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usagef("%s: %v", fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		if args[0] == "--" {
			return append(positional, args[1:]...), nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

func exactly(fs *flag.FlagSet, pos []string, n int, what string) error {
	if len(pos) != n {
		return usagef("%s: want %s, got %d argument(s)", fs.Name(), what, len(pos))
	}
	return nil
}

// connect resolves the admin URL and token.
func (c *command) connect() error {
	if c.admin == "" {
		c.admin = c.env.Getenv("DEV_HUB_ADMIN_URL")
	}
	if c.admin == "" {
		c.admin = DefaultAdminURL
	}
	if err := config.CheckURL(c.admin); err != nil {
		return usagef("--admin: %v", err)
	}
	c.admin = strings.TrimRight(c.admin, "/")
	l := config.NewLoader(c.env.Getenv)
	c.token = l.Secret("DEV_HUB_ADMIN_TOKEN", true)
	if err := l.Err(); err != nil {
		return fmt.Errorf("admin token: %w", err)
	}
	c.client = httpx.NewClient(30 * time.Second)
	return nil
}

// call sends one admin request and decodes the JSON reply into out.
func (c *command) call(ctx context.Context, method, path string, body, out any) error {
	if c.client == nil {
		if err := c.connect(); err != nil {
			return err
		}
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.admin+path, rd)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return fmt.Errorf("admin API: read reply: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var e struct {
			Detail any `json:"detail"`
		}
		if json.Unmarshal(raw, &e) == nil && e.Detail != nil {
			return fmt.Errorf("admin API: %s %s: HTTP %d: %v", method, path, resp.StatusCode, e.Detail)
		}
		return fmt.Errorf("admin API: %s %s: HTTP %d", method, path, resp.StatusCode)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("admin API: decode reply: %w", err)
	}
	return nil
}

func (c *command) printJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	_, err = fmt.Fprintf(c.env.Stdout, "%s\n", b)
	return err
}

func (c *command) trustAdd(ctx context.Context, args []string) error {
	fs := c.flags("trust add")
	var in admin.CreateTrustRequest
	fs.StringVar(&in.Name, "name", "", "trust name")
	fs.StringVar(&in.HubAPIURL, "hub-url", "", "the hub's /api URL as the trust reaches it")
	fs.StringVar(&in.Code, "code", "", "trust code (default: the name)")
	fs.StringVar(&in.Region, "region", "", "region")
	asJSON := fs.Bool("json", false, "print the whole registration reply as JSON")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := exactly(fs, pos, 0, "no arguments"); err != nil {
		return err
	}
	if in.Name == "" {
		return usagef("trust add: --name is required")
	}
	var out admin.CreateTrustReply
	if err := c.call(ctx, http.MethodPost, "/admin/trusts", in, &out); err != nil {
		return err
	}
	if *asJSON {
		return c.printJSON(out)
	}
	_, err = io.WriteString(c.env.Stdout, out.KitEnv)
	return err
}

func (c *command) trustList(ctx context.Context, args []string) error {
	fs := c.flags("trust list")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := exactly(fs, pos, 0, "no arguments"); err != nil {
		return err
	}
	var trusts []admin.TrustView
	if err := c.call(ctx, http.MethodGet, "/admin/trusts", nil, &trusts); err != nil {
		return err
	}
	if *asJSON {
		return c.printJSON(trusts)
	}
	tw := tabwriter.NewWriter(c.env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTRUST_ID\tSTATE\tLAST_HEARTBEAT\tSERVICES")
	for _, t := range trusts {
		state, last := "offline", "never"
		if t.Online {
			state = "online"
		}
		if t.LastHeartbeat != nil {
			last = t.LastHeartbeat.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.Name, t.TrustID, state, last, servicesSummary(t.ServicesHealth))
	}
	return tw.Flush()
}

func servicesSummary(raw json.RawMessage) string {
	var services map[string]hubapi.ServiceHealth
	if json.Unmarshal(raw, &services) != nil || len(services) == 0 {
		return "-"
	}
	names := make([]string, 0, len(services))
	for n := range services {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + "=" + services[n].Status
	}
	return strings.Join(parts, ",")
}

// trustRef names a trust in a request body by id when it is a UUID, otherwise
// by name.
func trustRef(s string) (id, name string) {
	if u, err := uuid.Parse(s); err == nil {
		return u.String(), ""
	}
	return "", s
}

func (c *command) taskSubmit(ctx context.Context, args []string) error {
	fs := c.flags("task submit")
	trust := fs.String("trust", "", "trust name or id")
	typ := fs.String("type", "", "task type: "+typeList())
	payload := fs.String("payload", "", "payload JSON object")
	payloadFile := fs.String("payload-file", "", "file holding the payload JSON object")
	sql := fs.String("sql", "", "cohort_query shortcut: the cohort SQL")
	projectID := fs.String("project-id", "", "cohort_query shortcut: project id (default: a new UUID)")
	queryName := fs.String("query-name", "", "cohort_query shortcut: query name")
	queryID := fs.String("query-id", "", "cohort_query shortcut: query id (default: a new UUID)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := exactly(fs, pos, 0, "no arguments"); err != nil {
		return err
	}
	if *trust == "" {
		return usagef("task submit: --trust is required")
	}
	trustID, trustName := trustRef(*trust)
	var task admin.TaskView

	sources := 0
	for _, s := range []string{*payload, *payloadFile, *sql} {
		if s != "" {
			sources++
		}
	}
	if sources != 1 {
		return usagef("task submit: give exactly one of --payload, --payload-file and --sql")
	}
	if *sql != "" {
		if *typ != "" && *typ != string(hubapi.CohortQuery) {
			return usagef("task submit: --sql builds a cohort_query, not %s", *typ)
		}
		req := admin.CohortQueryRequest{TrustID: trustID, TrustName: trustName, Query: *sql, QueryName: *queryName, QueryID: *queryID, ProjectID: *projectID}
		if err := c.call(ctx, http.MethodPost, "/admin/cohort-queries", req, &task); err != nil {
			return err
		}
		_, err := fmt.Fprintln(c.env.Stdout, task.ID)
		return err
	}
	if *projectID != "" || *queryName != "" || *queryID != "" {
		return usagef("task submit: --project-id, --query-name and --query-id go with --sql")
	}
	if !hubapi.TaskType(*typ).Valid() {
		return usagef("task submit: --type must be one of %s", typeList())
	}
	body := []byte(*payload)
	if *payloadFile != "" {
		if body, err = os.ReadFile(*payloadFile); err != nil {
			return fmt.Errorf("read payload: %w", err)
		}
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		return usagef("task submit: the payload must be a JSON object")
	}
	req := admin.CreateTaskRequest{TrustID: trustID, TrustName: trustName, TaskType: hubapi.TaskType(*typ), Payload: body}
	if err := c.call(ctx, http.MethodPost, "/admin/tasks", req, &task); err != nil {
		return err
	}
	_, err = fmt.Fprintln(c.env.Stdout, task.ID)
	return err
}

func typeList() string {
	names := make([]string, len(hubapi.TaskTypes))
	for i, t := range hubapi.TaskTypes {
		names[i] = string(t)
	}
	return strings.Join(names, ", ")
}

func (c *command) taskList(ctx context.Context, args []string) error {
	fs := c.flags("task list")
	trust := fs.String("trust", "", "trust name or id")
	status := fs.String("status", "", "PENDING, IN_PROGRESS, COMPLETED, FAILED or CANCELLED")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := exactly(fs, pos, 0, "no arguments"); err != nil {
		return err
	}
	q := url.Values{}
	if *trust != "" {
		q.Set("trust", *trust)
	}
	if *status != "" {
		q.Set("status", strings.ToUpper(*status))
	}
	path := "/admin/tasks"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var tasks []admin.TaskView
	if err := c.call(ctx, http.MethodGet, path, nil, &tasks); err != nil {
		return err
	}
	if *asJSON {
		return c.printJSON(tasks)
	}
	tw := tabwriter.NewWriter(c.env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTRUST\tTYPE\tSTATUS\tRETRIES\tCREATED")
	for _, t := range tasks {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", t.ID, t.TrustName, t.TaskType, t.Status, t.RetryCount, t.CreatedAt.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

func (c *command) getTask(ctx context.Context, id string) (admin.TaskView, error) {
	var t admin.TaskView
	if _, err := uuid.Parse(id); err != nil {
		return t, usagef("%q is not a task id", id)
	}
	err := c.call(ctx, http.MethodGet, "/admin/tasks/"+url.PathEscape(id), nil, &t)
	return t, err
}

func (c *command) taskShow(ctx context.Context, args []string) error {
	fs := c.flags("task show")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := exactly(fs, pos, 1, "a task ID"); err != nil {
		return err
	}
	t, err := c.getTask(ctx, pos[0])
	if err != nil {
		return err
	}
	return c.printJSON(t)
}

func (c *command) taskCancel(ctx context.Context, args []string) error {
	fs := c.flags("task cancel")
	id, err := oneUUID(fs, args, "task")
	if err != nil {
		return err
	}
	var t admin.TaskView
	if err := c.call(ctx, http.MethodPost, "/admin/tasks/"+url.PathEscape(id)+"/cancel", nil, &t); err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.env.Stdout, "%s %s\n", t.ID, t.Status)
	return err
}

func (c *command) taskWait(ctx context.Context, args []string) error {
	id, timeout, interval, err := c.waitArgs("task wait", args, "a task ID", 60*time.Second, 200*time.Millisecond)
	if err != nil {
		return err
	}
	return c.pollUntil(ctx, timeout, interval, func() (bool, string, error) {
		t, err := c.getTask(ctx, id)
		if err != nil {
			return false, "", err
		}
		switch t.Status {
		case hubapi.Completed:
			_, err := fmt.Fprintf(c.env.Stdout, "%s %s\n", t.ID, t.Status)
			return true, "", err
		case hubapi.Failed, hubapi.Cancelled:
			fmt.Fprintf(c.env.Stdout, "%s %s\n", t.ID, t.Status)
			if t.Result != nil {
				fmt.Fprintf(c.env.Stderr, "dev-hub: task %s %s: %s\n", t.ID, t.Status, *t.Result)
			}
			return true, "", exitCode(1)
		}
		return false, fmt.Sprintf("task %s still %s", t.ID, t.Status), nil
	})
}

// waitArgs parses a wait command's flags (--timeout, --interval) and its
// one positional id.
func (c *command) waitArgs(name string, args []string, what string, timeout, interval time.Duration) (string, time.Duration, time.Duration, error) {
	fs := c.flags(name)
	t := fs.Duration("timeout", timeout, "how long to wait")
	i := fs.Duration("interval", interval, "poll interval")
	pos, err := parse(fs, args)
	if err != nil {
		return "", 0, 0, err
	}
	if err := exactly(fs, pos, 1, what); err != nil {
		return "", 0, 0, err
	}
	if *t <= 0 || *i <= 0 {
		return "", 0, 0, usagef("%s: --timeout and --interval must be positive", name)
	}
	return pos[0], *t, *i, nil
}

// pollUntil calls step every interval until it reports done (returning its
// error) or fails; when the next poll would pass timeout it prints step's
// last "still ..." line and exits 1.
func (c *command) pollUntil(ctx context.Context, timeout, interval time.Duration, step func() (done bool, still string, err error)) error {
	deadline := time.Now().Add(timeout)
	for {
		done, still, err := step()
		if done || err != nil {
			return err
		}
		if !time.Now().Add(interval).Before(deadline) {
			fmt.Fprintf(c.env.Stderr, "dev-hub: %s after %s\n", still, timeout)
			return exitCode(1)
		}
		timer := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
	}
}

func (c *command) results(ctx context.Context, args []string) error {
	fs := c.flags("results")
	queryID := fs.String("query-id", "", "query id (all results when empty)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := exactly(fs, pos, 0, "no arguments"); err != nil {
		return err
	}
	path := "/admin/cohort-results"
	if *queryID != "" {
		if _, err := uuid.Parse(*queryID); err != nil {
			return usagef("results: --query-id must be a UUID")
		}
		path += "?query_id=" + url.QueryEscape(*queryID)
	}
	var rows []admin.CohortResultView
	if err := c.call(ctx, http.MethodGet, path, nil, &rows); err != nil {
		return err
	}
	return c.printJSON(rows)
}

// seal prints its argument sealed under the hub's shared key, for payload
// fields and requests the hub or an FL job would carry encrypted (a task's
// encrypted_project_id, a download's encrypted_central_hub_project_id).
func (c *command) seal(args []string) error {
	fs := c.flags("seal")
	purpose := fs.String("context", envelope.ProjectIDContext, "envelope context")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := exactly(fs, pos, 1, "the text to seal"); err != nil {
		return err
	}
	if *purpose == "" {
		return usagef("seal: --context must not be empty")
	}
	l := config.NewLoader(c.env.Getenv)
	key := l.Secret("AES_KEY_BASE64", true)
	if err := l.Err(); err != nil {
		return fmt.Errorf("hub key: %w", err)
	}
	cipher, err := envelope.NewFromBase64(key)
	if err != nil {
		return fmt.Errorf("AES_KEY_BASE64: %w", err)
	}
	sealed, err := cipher.Seal([]byte(pos[0]), *purpose)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(c.env.Stdout, sealed)
	return err
}

// oneUUID parses args for exactly one positional argument, the UUID of a
// what ("task", "job").
func oneUUID(fs *flag.FlagSet, args []string, what string) (string, error) {
	pos, err := parse(fs, args)
	if err != nil {
		return "", err
	}
	if err := exactly(fs, pos, 1, "a "+what+" ID"); err != nil {
		return "", err
	}
	if _, err := uuid.Parse(pos[0]); err != nil {
		return "", usagef("%q is not a %s id", pos[0], what)
	}
	return pos[0], nil
}
