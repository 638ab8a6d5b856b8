// Package cohort runs validated cohort SQL on the OMOP database: statistics
// computed inside PostgreSQL, streamed rows for frozen cohorts, and the
// membership lookups behind the snapshot routes. Every statement runs in a
// read-only transaction with a statement_timeout, on a bounded pool, and is
// cancelled in the server when the caller goes away.
//
// Errors returned to callers are *httpx.Error values carrying category-only
// details (FLIP's texts where FLIP has one): driver text can quote data and is
// only logged, with the query's hash, never its SQL.
package cohort

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flip-trust/node/shared/httpx"
	"github.com/flip-trust/node/shared/logging"
)

// Details of the errors a query can end in.
const (
	DetailUnavailable  = "The OMOP database is unavailable; try again later."
	DetailTimeout      = "Query exceeded the time limit."
	DetailQueryFailed  = "query_failed"
	DetailInternal     = "internal_error"
	DetailCanceled     = "Query cancelled."
	detailTableFormat  = "The table '%s' does not exist."
	detailColumnFormat = "The column '%s' does not exist."
)

// Engine runs cohort SQL on a pool of read-only connections.
type Engine struct {
	pool    *pgxpool.Pool
	timeout time.Duration
	workMem string
	logger  *slog.Logger
	// personKey caches whether omop.person.person_id is unique (see
	// personIDUnique): 0 not yet known, 1 unique, 2 not.
	personKey atomic.Int32
	// joinBack makes statistics always join back to omop.person (tests
	// compare both ways).
	joinBack bool
}

// Options configure New.
type Options struct {
	// DSN connects as the read-only reader role.
	DSN string
	// MaxConns bounds the pool (the role's CONNECTION LIMIT is 5).
	MaxConns int
	// QueryTimeout is each statement's statement_timeout.
	QueryTimeout time.Duration
	// WorkMem is each transaction's work_mem, enough for the statistics'
	// hash aggregates to stay in memory (default 64MB).
	WorkMem string
	Logger  *slog.Logger
}

// New builds an Engine. It does not connect: the database may come up later,
// and each request connects (or answers 503) on its own.
func New(opts Options) (*Engine, error) {
	cfg, err := pgxpool.ParseConfig(opts.DSN)
	if err != nil {
		return nil, fmt.Errorf("database settings: %w", errors.New("invalid connection settings"))
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = 4
	}
	if opts.QueryTimeout <= 0 {
		opts.QueryTimeout = 300 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = logging.Discard()
	}
	if opts.WorkMem == "" {
		opts.WorkMem = "64MB"
	}
	cfg.MaxConns = int32(opts.MaxConns)
	cfg.MinConns = 0
	cfg.MaxConnIdleTime = 5 * time.Minute
	cfg.HealthCheckPeriod = 30 * time.Second
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	cfg.ConnConfig.RuntimeParams["default_transaction_read_only"] = "on"
	cfg.ConnConfig.RuntimeParams["search_path"] = "omop"
	// A cancelled request cancels its statement in the server (a cancel
	// request), rather than only closing the socket.
	cfg.ConnConfig.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, CancelRequestDelay: 0, DeadlineDelay: 5 * time.Second}
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("database pool: %w", err)
	}
	return &Engine{pool: pool, timeout: opts.QueryTimeout, workMem: opts.WorkMem, logger: opts.Logger}, nil
}

// Close closes the pool.
func (e *Engine) Close() { e.pool.Close() }

// Ping checks the database answers, for /health.
func (e *Engine) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return e.pool.Ping(ctx)
}

// readOnly runs fn in a read-only transaction whose statements are bounded by
// the engine's timeout. The transaction is always rolled back: nothing a
// cohort query does is ever kept.
func (e *Engine) readOnly(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return e.readOnlyJIT(ctx, true, fn)
}

// readOnlyJIT is readOnly with PostgreSQL's JIT compilation of the
// transaction's statements on or off. The statistics statement turns it off:
// over a million-row cohort its plan costs cross jit_above_cost and
// compiling takes longer than the aggregation it would speed up.
func (e *Engine) readOnlyJIT(ctx context.Context, jit bool, fn func(tx pgx.Tx) error) error {
	tx, err := e.pool.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly, IsoLevel: pgx.RepeatableRead})
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	ms := strconv.FormatInt(e.timeout.Milliseconds(), 10)
	settings := "SELECT set_config('statement_timeout', $1, true), set_config('work_mem', $2, true)"
	if !jit {
		settings += ", set_config('jit', 'off', true)"
	}
	if _, err := tx.Exec(ctx, settings, ms, e.workMem); err != nil {
		return err
	}
	return fn(tx)
}

// personIDUnique reports whether omop.person.person_id has a unique index,
// as the OMOP CDM's primary key gives it; the answer is cached once known.
// Statistics rely on it to read a person's sex and birth date from the
// cohort's own omop.person row instead of joining back to omop.person.
func (e *Engine) personIDUnique(ctx context.Context, tx pgx.Tx) bool {
	switch e.personKey.Load() {
	case 1:
		return true
	case 2:
		return false
	}
	var unique bool
	err := tx.QueryRow(ctx, `SELECT EXISTS (
  SELECT 1 FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
  WHERE i.indrelid = to_regclass('omop.person') AND i.indisunique AND i.indisvalid AND i.indimmediate
    AND i.indnkeyatts = 1 AND i.indpred IS NULL AND i.indexprs IS NULL AND a.attname = 'person_id')`).Scan(&unique)
	if err != nil {
		return false // not cached: asked again next time
	}
	if unique {
		e.personKey.Store(1)
	} else {
		e.personKey.Store(2)
	}
	return unique
}

var (
	missingRelation = regexp.MustCompile(`relation "([^"]+)" does not exist`)
	missingColumn   = regexp.MustCompile(`column "([^"]+)" does not exist`)
)

// classify maps a database error to the caller's category-only *httpx.Error
// and logs the full error with the query hash.
func (e *Engine) classify(ctx context.Context, err error, queryHash string) error {
	if err == nil {
		return nil
	}
	var he *httpx.Error
	if errors.As(err, &he) {
		return he
	}
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe):
		e.logger.Warn("cohort query failed in the database", "query_hash", queryHash, "sqlstate", pe.Code)
		switch {
		case pe.Code == "42P01":
			return httpx.Errorf(http.StatusBadRequest, detailTableFormat, submatch(missingRelation, pe.Message))
		case pe.Code == "42703":
			return httpx.Errorf(http.StatusBadRequest, detailColumnFormat, submatch(missingColumn, pe.Message))
		case pe.Code == "57014": // query_canceled: statement_timeout or a cancel request
			if ctx.Err() != nil {
				return httpx.NewError(499, DetailCanceled)
			}
			return httpx.NewError(http.StatusGatewayTimeout, DetailTimeout)
		case pe.Code == "25006" || pe.Code == "42501":
			return httpx.Errorf(http.StatusBadRequest, "The query is not permitted (SQLSTATE %s).", pe.Code)
		case pe.Code[:2] == "42" || pe.Code[:2] == "22":
			return httpx.Errorf(http.StatusBadRequest, "The database rejected the query (SQLSTATE %s).", pe.Code)
		case pe.Code[:2] == "08" || pe.Code[:2] == "57" || pe.Code == "53300":
			return httpx.NewError(http.StatusServiceUnavailable, DetailUnavailable)
		}
		return httpx.NewError(http.StatusInternalServerError, DetailQueryFailed)
	case ctx.Err() != nil:
		return httpx.NewError(499, DetailCanceled)
	case isConnError(err):
		e.logger.Warn("OMOP database unreachable", "query_hash", queryHash, "error", err.Error())
		return httpx.NewError(http.StatusServiceUnavailable, DetailUnavailable)
	}
	e.logger.Error("cohort query failed", "query_hash", queryHash, "error", err.Error())
	return httpx.NewError(http.StatusInternalServerError, DetailInternal)
}

func isConnError(err error) bool {
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) || pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return true
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne)
}

func submatch(re *regexp.Regexp, s string) string {
	if m := re.FindStringSubmatch(s); m != nil {
		return m[1]
	}
	return "None"
}
