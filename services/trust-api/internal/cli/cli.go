// Package cli is trust-api's operator command line besides the service
// itself: `audit verify|show` read the audit ledger offline (--dir, default
// $AUDIT_LEDGER_DIR or <$TRUST_API_DATA_DIR>/audit), and `review ...` talks
// to a running trust-api's local reviewer API ($EGRESS_REVIEW_ADDR, key from
// EGRESS_REVIEWER_KEY or EGRESS_REVIEWER_KEY_FILE).
//
// Run returns the process exit code: 0 success, 1 failure (including a
// ledger that does not verify), 2 a usage error.
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
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/flip-trust/node/services/trust-api/internal/config"
	"github.com/flip-trust/node/services/trust-api/internal/egress"
	sharedcfg "github.com/flip-trust/node/shared/config"
	"github.com/flip-trust/node/shared/ledger"
)

// Usage is the command summary.
const Usage = `usage: trust-api [command]

  (no command)                            run the service
  audit verify [--dir D]                  check the audit ledger's hash chain; exit 1 at the first bad entry
  audit show [--dir D] [--project P] [--channel C] [--since RFC3339|duration]
                                          print ledger entries as a table
  review list [--state held|released|rejected|expired|refused|all]
  review show ID                          print an egress item as JSON
  review content ID                       write the exact bytes that would leave to stdout
  review approve ID --reviewer NAME [--note TEXT]
  review reject ID --reviewer NAME --reason TEXT

review commands call the reviewer API at $EGRESS_REVIEW_ADDR (default ` + config.DefaultReviewAddr + `)
with the key from $EGRESS_REVIEWER_KEY or $EGRESS_REVIEWER_KEY_FILE.
`

// Env is what a command reads from its surroundings.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	Now            func() time.Time
	Client         *http.Client
}

// Commands are the first arguments Run handles.
var Commands = []string{"audit", "review"}

// Run runs one command.
func Run(ctx context.Context, args []string, env Env) int {
	if env.Now == nil {
		env.Now = time.Now
	}
	if env.Client == nil {
		env.Client = &http.Client{Timeout: 30 * time.Second}
	}
	if len(args) < 2 {
		fmt.Fprint(env.Stderr, Usage)
		return 2
	}
	var err error
	switch args[0] + " " + args[1] {
	case "audit verify":
		err = auditVerify(args[2:], env)
	case "audit show":
		err = auditShow(args[2:], env)
	default:
		if args[0] == "review" {
			err = review(ctx, args[1], args[2:], env)
		} else {
			err = usageError("unknown command " + strings.Join(args[:2], " "))
		}
	}
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(env.Stderr, "trust-api: %s\n\n%s", ue, Usage)
		return 2
	default:
		fmt.Fprintln(env.Stderr, "trust-api:", err)
		return 1
	}
}

type usageError string

func (e usageError) Error() string { return string(e) }

func flags(name string, env Env) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	return fs
}

// parse parses args allowing flags after positional arguments.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usageError(err.Error())
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func ledgerDir(fs *flag.FlagSet, env Env) *string {
	def := env.Getenv("AUDIT_LEDGER_DIR")
	if def == "" {
		data := env.Getenv("TRUST_API_DATA_DIR")
		if data == "" {
			data = "/var/lib/trust-api"
		}
		def = filepath.Join(data, "audit")
	}
	return fs.String("dir", def, "ledger directory")
}

func auditVerify(args []string, env Env) error {
	fs := flags("audit verify", env)
	dir := ledgerDir(fs, env)
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usageError("audit verify takes no arguments")
	}
	s, err := ledger.Verify(*dir)
	var ce *ledger.CorruptError
	if errors.As(err, &ce) {
		return fmt.Errorf("audit ledger %s does NOT verify: first bad entry: %w", *dir, err)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "audit ledger %s verifies: %d entries in %d files", *dir, s.Entries, s.Files)
	if s.Entries > 0 {
		fmt.Fprintf(env.Stdout, ", last seq %d at %s, hash %s", s.Last.Seq, s.Last.Time.Format(time.RFC3339), s.Last.Hash)
	}
	fmt.Fprintln(env.Stdout)
	return nil
}

func auditShow(args []string, env Env) error {
	fs := flags("audit show", env)
	dir := ledgerDir(fs, env)
	project := fs.String("project", "", "only this project")
	channel := fs.String("channel", "", "only this channel")
	since := fs.String("since", "", "only entries at or after this RFC 3339 time, or this long ago (24h)")
	budget := fs.Bool("budget", false, "only privacy budget spends")
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usageError("audit show takes no arguments")
	}
	t, err := ledger.ParseSince(*since, env.Now())
	if err != nil {
		return usageError("--since: " + err.Error())
	}
	f := ledger.Filter{Project: *project, Channel: *channel, Since: t}
	if *budget {
		f.Kind = ledger.KindDPSpend
	}
	entries, err := ledger.Select(*dir, f)
	if err != nil {
		return err
	}
	if err := ledger.Show(env.Stdout, entries); err != nil {
		return err
	}
	if *budget {
		return showBudgets(env.Stdout, entries)
	}
	return nil
}

// showBudgets prints, per project, the budget and what its spends left: the
// figures of the project's latest dp_spend entry, whose rules carry the
// project's composed ε after the spend and its budget.
func showBudgets(w io.Writer, entries []ledger.Entry) error {
	type row struct {
		budget, spent, delta string
		jobs                 int
	}
	rows := map[string]*row{}
	var order []string
	for _, e := range entries {
		if e.Kind != ledger.KindDPSpend {
			continue
		}
		r := rows[e.Project]
		if r == nil {
			r = &row{}
			rows[e.Project] = r
			order = append(order, e.Project)
		}
		r.jobs++
		for _, rule := range e.Rules {
			k, v, _ := strings.Cut(rule, "=")
			switch k {
			case "epsilon_budget":
				r.budget = v
			case "epsilon_spent":
				r.spent = v
			case "delta":
				r.delta = v
			}
		}
	}
	fmt.Fprintln(w)
	if len(order) == 0 {
		_, err := fmt.Fprintln(w, "no privacy budget spends")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROJECT\tJOBS\tEPSILON BUDGET\tEPSILON SPENT\tEPSILON REMAINING\tDELTA")
	for _, p := range order {
		r := rows[p]
		remaining := "?"
		b, errB := strconv.ParseFloat(r.budget, 64)
		sp, errS := strconv.ParseFloat(r.spent, 64)
		if errB == nil && errS == nil {
			remaining = strconv.FormatFloat(max(b-sp, 0), 'f', 4, 64)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", p, r.jobs, dash(r.budget), dash(r.spent), remaining, dash(r.delta))
	}
	return tw.Flush()
}

// reviewClient calls the reviewer API.
type reviewClient struct {
	base string
	key  string
	http *http.Client
}

func newReviewClient(env Env) (*reviewClient, error) {
	l := sharedcfg.NewLoader(env.Getenv)
	key := l.Secret("EGRESS_REVIEWER_KEY", true)
	if err := l.Err(); err != nil {
		return nil, err
	}
	if key == "" {
		return nil, errors.New("EGRESS_REVIEWER_KEY (or EGRESS_REVIEWER_KEY_FILE) is required")
	}
	addr := strings.TrimSpace(env.Getenv("EGRESS_REVIEW_ADDR"))
	if addr == "" {
		addr = config.DefaultReviewAddr
	}
	base := addr
	if !strings.Contains(addr, "://") {
		base = "http://" + addr
	}
	return &reviewClient{base: strings.TrimRight(base, "/") + egress.ReviewPrefix, key: key, http: env.Client}, nil
}

func (c *reviewClient) do(ctx context.Context, method, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reviewer API: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, egress.MaxContent+1))
	if err != nil {
		return nil, fmt.Errorf("reviewer API: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var eb struct {
			Detail any `json:"detail"`
		}
		if json.Unmarshal(raw, &eb) == nil && eb.Detail != nil {
			return nil, fmt.Errorf("reviewer API: HTTP %d: %v", resp.StatusCode, eb.Detail)
		}
		return nil, fmt.Errorf("reviewer API: HTTP %d", resp.StatusCode)
	}
	return raw, nil
}

func review(ctx context.Context, sub string, args []string, env Env) error {
	fs := flags("review "+sub, env)
	state := fs.String("state", "held", "list: items in this state (all for every item)")
	reviewer := fs.String("reviewer", "", "approve/reject: your name, recorded in the ledger")
	note := fs.String("note", "", "approve: a note kept with the item")
	reason := fs.String("reason", "", "reject: the reason, reported to the hub")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	want := 1
	if sub == "list" {
		want = 0
	}
	switch sub {
	case "list", "show", "content", "approve", "reject":
	default:
		return usageError("unknown command review " + sub)
	}
	if len(pos) != want {
		return usageError(fmt.Sprintf("review %s takes %d argument(s)", sub, want))
	}
	if (sub == "approve" || sub == "reject") && strings.TrimSpace(*reviewer) == "" {
		return usageError("--reviewer is required")
	}
	if sub == "reject" && strings.TrimSpace(*reason) == "" {
		return usageError("--reason is required")
	}
	c, err := newReviewClient(env)
	if err != nil {
		return err
	}
	id := ""
	if want == 1 {
		id = "/" + url.PathEscape(pos[0])
	}
	switch sub {
	case "list":
		q := ""
		if *state != "all" {
			q = "?state=" + url.QueryEscape(*state)
		}
		raw, err := c.do(ctx, http.MethodGet, "/items"+q, nil)
		if err != nil {
			return err
		}
		var items []egress.Item
		if err := json.Unmarshal(raw, &items); err != nil {
			return fmt.Errorf("reviewer API: %w", err)
		}
		return listItems(env.Stdout, items)
	case "content":
		raw, err := c.do(ctx, http.MethodGet, "/items"+id+"/content", nil)
		if err != nil {
			return err
		}
		_, err = env.Stdout.Write(raw)
		return err
	case "show":
		raw, err := c.do(ctx, http.MethodGet, "/items"+id, nil)
		if err != nil {
			return err
		}
		return printJSON(env.Stdout, raw)
	case "approve":
		raw, err := c.do(ctx, http.MethodPost, "/items"+id+"/approve", map[string]string{"reviewer": *reviewer, "note": *note})
		if err != nil {
			return err
		}
		return printJSON(env.Stdout, raw)
	default:
		raw, err := c.do(ctx, http.MethodPost, "/items"+id+"/reject", map[string]string{"reviewer": *reviewer, "reason": *reason})
		if err != nil {
			return err
		}
		return printJSON(env.Stdout, raw)
	}
}

func printJSON(w io.Writer, raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return fmt.Errorf("reviewer API: %w", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

func listItems(w io.Writer, items []egress.Item) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tCHANNEL\tKIND\tTASK\tPROJECT\tSIZE\tCREATED\tEXPIRES\tREVIEWER\tREASON")
	for _, it := range items {
		exp := "-"
		if it.ExpiresAt != nil && it.State == egress.Held {
			exp = it.ExpiresAt.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", it.ID, it.State, it.Channel, it.Kind,
			dash(it.TaskID), dash(it.Project), it.Size, it.CreatedAt.Format(time.RFC3339), exp, dash(it.Reviewer), dash(it.Reason))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
