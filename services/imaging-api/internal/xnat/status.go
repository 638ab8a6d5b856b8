package xnat

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Querier runs a query on XNAT's PostgreSQL; *pgxpool.Pool, *pgx.Conn and
// pgx.Tx satisfy it.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Terminal failure statuses of DQR's tables.
const (
	// ExecutedFailed is a PACS request that failed for good.
	ExecutedFailed = "FAILED"
	// ArchiveError is a direct-archive session XNAT could not build.
	ArchiveError = "ERROR"
)

// DQRState is a project's accession numbers in XNAT's DQR tables.
type DQRState struct {
	// Failed: direct-archive sessions in ERROR (accession = name, else
	// folder_name) and executed requests FAILED.
	Failed map[string]bool
	// InProgress: every other direct-archive session and executed request.
	InProgress map[string]bool
	// Queued: every queued request, whatever its status.
	Queued map[string]bool
}

// dqrStateSQL reads the three tables in one statement, so the state is one
// consistent snapshot.
const dqrStateSQL = `
SELECT 'archive', COALESCE(NULLIF(name, ''), folder_name), status FROM xhbm_direct_archive_session WHERE project = $1
UNION ALL
SELECT 'executed', accession_number, status FROM xhbm_executed_pacs_request WHERE xnat_project = $1
UNION ALL
SELECT 'queued', accession_number, status FROM xhbm_queued_pacs_request WHERE xnat_project = $1`

// ReadDQRState reads a project's rows from XNAT's DQR tables.
func ReadDQRState(ctx context.Context, db Querier, project string) (DQRState, error) {
	st := DQRState{Failed: map[string]bool{}, InProgress: map[string]bool{}, Queued: map[string]bool{}}
	rows, err := db.Query(ctx, dqrStateSQL, project)
	if err != nil {
		return DQRState{}, fmt.Errorf("read dqr tables: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var src string
		var acc, status *string
		if err := rows.Scan(&src, &acc, &status); err != nil {
			return DQRState{}, fmt.Errorf("read dqr tables: %w", err)
		}
		if acc == nil {
			continue
		}
		s := ""
		if status != nil {
			s = *status
		}
		switch {
		case src == "queued":
			st.Queued[*acc] = true
		case src == "archive" && s == ArchiveError, src == "executed" && s == ExecutedFailed:
			st.Failed[*acc] = true
		default:
			st.InProgress[*acc] = true
		}
	}
	if err := rows.Err(); err != nil {
		return DQRState{}, fmt.Errorf("read dqr tables: %w", err)
	}
	return st, nil
}

// ImportStatus is the import state of a cohort's accession numbers.
type ImportStatus struct {
	Successful  []string `json:"successful"`
	Failed      []string `json:"failed"`
	Processing  []string `json:"processing"`
	Queued      []string `json:"queued"`
	QueueFailed []string `json:"queue_failed"`
}

// ImportStatusCount is FLIP's import_status object.
type ImportStatusCount struct {
	SuccessfulCount  int `json:"successful_count"`
	FailedCount      int `json:"failed_count"`
	ProcessingCount  int `json:"processing_count"`
	QueuedCount      int `json:"queued_count"`
	QueueFailedCount int `json:"queue_failed_count"`
}

// Counts returns the size of each list.
func (s ImportStatus) Counts() ImportStatusCount {
	return ImportStatusCount{len(s.Successful), len(s.Failed), len(s.Processing), len(s.Queued), len(s.QueueFailed)}
}

// Classify places each accession number (once, in order) in the first list
// that applies: successful (an experiment has it as label) > failed >
// processing (in progress) > queued > queue_failed (never entered DQR).
func Classify(accessions, experimentLabels []string, st DQRState) ImportStatus {
	archived := make(map[string]bool, len(experimentLabels))
	for _, l := range experimentLabels {
		archived[l] = true
	}
	out := ImportStatus{Successful: []string{}, Failed: []string{}, Processing: []string{}, Queued: []string{}, QueueFailed: []string{}}
	seen := make(map[string]bool, len(accessions))
	for _, a := range accessions {
		if seen[a] {
			continue
		}
		seen[a] = true
		switch {
		case archived[a]:
			out.Successful = append(out.Successful, a)
		case st.Failed[a]:
			out.Failed = append(out.Failed, a)
		case st.InProgress[a]:
			out.Processing = append(out.Processing, a)
		case st.Queued[a]:
			out.Queued = append(out.Queued, a)
		default:
			out.QueueFailed = append(out.QueueFailed, a)
		}
	}
	return out
}

// ImportStatus classifies a cohort's accession numbers for a project: the
// project's experiment labels from XNAT, the rest from XNAT's DQR tables
// (ErrNoDatabase without a database; ErrNotFound for an unknown project).
func (cl *Client) ImportStatus(ctx context.Context, project string, accessions []string) (ImportStatus, error) {
	if cl.db == nil {
		return ImportStatus{}, ErrNoDatabase
	}
	exps, err := cl.ListExperiments(ctx, project)
	if err != nil {
		return ImportStatus{}, err
	}
	labels := make([]string, 0, len(exps))
	for _, e := range exps {
		labels = append(labels, e.Label)
	}
	st, err := ReadDQRState(ctx, cl.db, project)
	if err != nil {
		return ImportStatus{}, err
	}
	return Classify(accessions, labels, st), nil
}

// QueuedRequestIDs returns the ids of a project's queued DQR requests.
func (cl *Client) QueuedRequestIDs(ctx context.Context, project string) ([]int64, error) {
	if cl.db == nil {
		return nil, ErrNoDatabase
	}
	rows, err := cl.db.Query(ctx, `SELECT id FROM xhbm_queued_pacs_request WHERE xnat_project = $1 ORDER BY id`, project)
	if err != nil {
		return nil, fmt.Errorf("read queued requests: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("read queued requests: %w", err)
	}
	return ids, nil
}

// passwordPlaceholder is the kit's value for a password not yet generated.
const passwordPlaceholder = "<run-make-generate-xnat-credentials>"

// DatabaseDSN turns XNAT_DATABASE_URL (FLIP's postgresql+asyncpg:// form or
// a plain postgres:// URL) into a pgx DSN, setting password as the URL's
// password when it is neither empty nor the kit's placeholder.
func DatabaseDSN(rawURL, password string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// The parser's message would quote the URL, password included.
		return "", errors.New("xnat database url: not a valid URL")
	}
	switch strings.ToLower(u.Scheme) {
	case "postgresql+asyncpg", "postgresql", "postgres":
		u.Scheme = "postgres"
	default:
		return "", fmt.Errorf("xnat database url: scheme %q is not postgres", u.Scheme)
	}
	if u.Host == "" {
		return "", errors.New("xnat database url: no host")
	}
	if password != "" && password != passwordPlaceholder {
		name := ""
		if u.User != nil {
			name = u.User.Username()
		}
		u.User = url.UserPassword(name, password)
	}
	return u.String(), nil
}

// OpenDatabase opens a small pool on XNAT's database whose sessions are
// read-only and whose statements time out after statementTimeout (30 s when
// zero). The caller closes it.
func OpenDatabase(ctx context.Context, dsn string, statementTimeout time.Duration) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("xnat database: %w", err)
	}
	if statementTimeout <= 0 {
		statementTimeout = 30 * time.Second
	}
	cfg.MaxConns = 4
	cfg.ConnConfig.RuntimeParams["default_transaction_read_only"] = "on"
	cfg.ConnConfig.RuntimeParams["statement_timeout"] = fmt.Sprint(statementTimeout.Milliseconds())
	cfg.ConnConfig.RuntimeParams["application_name"] = "imaging-api"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("xnat database: %w", err)
	}
	return pool, nil
}
