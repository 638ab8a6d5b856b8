package synth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	omopsql "github.com/flip-trust/node/services/data-access-api/sql"
)

// Options configure Load.
type Options struct {
	// Persons is the size of the whole population (person ids 1..Persons),
	// 1 to MaxPersons.
	Persons int
	// Seed selects the population; the same seed gives the same data.
	Seed uint64
	// TrustIndex and TrustCount select a slice: only persons with
	// person_id % TrustCount == TrustIndex are loaded. TrustCount 0 means 1.
	TrustIndex, TrustCount int
	// Truncate empties the generated tables first (in the transactions that
	// load them). Concept rows are never removed.
	Truncate bool
	// Progress, when set, is called with a table's cumulative row count as
	// its rows stream in, and once more with the final count after the load
	// has committed. Calls never overlap.
	Progress func(table string, rows int64)
}

// Result reports a finished load.
type Result struct {
	// Persons is the number of person rows loaded.
	Persons int64
	// Rows holds the rows loaded per table, including "concept" (concept
	// rows that were not present before).
	Rows map[string]int64
	// Elapsed is the whole load; Copy, Index and Analyze its phases.
	Elapsed, Copy, Index, Analyze time.Duration
}

// flushSize is the size of the encoded batches handed to a table's COPY.
const flushSize = 256 << 10

// progressStep is how many rows pass between intermediate Progress calls.
const progressStep = 1 << 20

// validate checks o and fills in defaults.
func (o *Options) validate() error {
	if o.TrustCount == 0 {
		o.TrustCount = 1
	}
	switch {
	case o.Persons < 1 || o.Persons > MaxPersons:
		return fmt.Errorf("synth: persons must be between 1 and %d, got %d", MaxPersons, o.Persons)
	case o.TrustCount < 1:
		return fmt.Errorf("synth: trust count must be at least 1, got %d", o.TrustCount)
	case o.TrustIndex < 0 || o.TrustIndex >= o.TrustCount:
		return fmt.Errorf("synth: trust index must be between 0 and %d, got %d", o.TrustCount-1, o.TrustIndex)
	}
	return nil
}

// slicePersons calls fn for every person id of the slice, in order, until fn
// returns false.
func (o *Options) slicePersons(fn func(id int64) bool) {
	first := int64(o.TrustIndex)
	if first == 0 {
		first = int64(o.TrustCount)
	}
	for id := first; id <= int64(o.Persons); id += int64(o.TrustCount) {
		if !fn(id) {
			return
		}
	}
}

// Load generates the population slice opts selects and loads it into the
// OMOP tables of the database at dsn, which must connect as the database
// owner or a superuser and already hold the schema (pgcluster.ApplySchema).
//
// Every table streams through its own COPY in its own transaction; the
// transactions commit together once every COPY has succeeded, and all roll
// back if one fails. The secondary indexes of sql/20_indexes.sql are dropped
// for the load and rebuilt afterwards (also after a failed load), then the
// tables are analysed. Loading a slice into a database that already holds
// another slice of the same seed adds it; loading rows that are already
// there fails on their primary keys unless Truncate is set. Dropping the
// indexes and truncating take exclusive locks, so Load waits for open
// readers of those tables.
func Load(ctx context.Context, dsn string, opts Options) (Result, error) {
	start := time.Now()
	res := Result{Rows: map[string]int64{}}
	if err := opts.validate(); err != nil {
		return res, err
	}
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return res, fmt.Errorf("synth: connect: %w", err)
	}
	defer admin.Close(context.WithoutCancel(ctx))
	if err := checkSchema(ctx, admin); err != nil {
		return res, err
	}
	n, err := insertConcepts(ctx, admin)
	if err != nil {
		return res, err
	}
	res.Rows["concept"] = n

	idx := secondaryIndexes()
	for _, ix := range idx {
		if _, err := admin.Exec(ctx, "DROP INDEX IF EXISTS "+ix.schema+"."+ix.name); err != nil {
			return res, fmt.Errorf("synth: drop index %s: %w", ix.name, err)
		}
	}

	var report progress
	report.fn = opts.Progress
	copyStart := time.Now()
	rows, loadErr := loadTables(ctx, dsn, &opts, &report)
	res.Copy = time.Since(copyStart)

	if loadErr == nil {
		for _, t := range tables {
			res.Rows[t.name] = rows[t.name]
			report.call(t.name, rows[t.name])
		}
		res.Persons = rows["person"]
	}

	// The indexes come back whatever happened to the load.
	ictx := ctx
	if loadErr != nil {
		var cancel context.CancelFunc
		ictx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
		defer cancel()
	}
	indexStart := time.Now()
	if err := runParallel(ictx, dsn, idx, rows, func(ix index) string { return ix.create }, func(ix index) string { return ix.table }); err != nil {
		return res, errors.Join(loadErr, fmt.Errorf("synth: create indexes: %w", err))
	}
	res.Index = time.Since(indexStart)
	if loadErr != nil {
		return res, loadErr
	}

	analyzeStart := time.Now()
	names := append(TableNames(), "concept")
	if err := runParallel(ctx, dsn, names, rows, func(t string) string { return "ANALYZE omop." + t }, func(t string) string { return t }); err != nil {
		return res, fmt.Errorf("synth: analyze: %w", err)
	}
	res.Analyze = time.Since(analyzeStart)
	res.Elapsed = time.Since(start)
	return res, nil
}

// checkSchema fails clearly when the OMOP tables are missing.
func checkSchema(ctx context.Context, conn *pgx.Conn) error {
	var missing []string
	for _, t := range append(TableNames(), "concept", "concept_ancestor") {
		var ok bool
		if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", "omop."+t).Scan(&ok); err != nil {
			return fmt.Errorf("synth: check schema: %w", err)
		}
		if !ok {
			missing = append(missing, "omop."+t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("synth: the database lacks %s: provision the OMOP schema first", strings.Join(missing, ", "))
	}
	return nil
}

// insertConcepts adds the concept rows that are not there yet, each with a
// concept_ancestor row naming itself (as OMOP vocabularies do), and returns
// how many concepts it added.
func insertConcepts(ctx context.Context, conn *pgx.Conn) (int64, error) {
	n := len(Concepts)
	ids, names, domains, vocabs, classes, std, codes := make([]int32, n), make([]string, n), make([]string, n),
		make([]string, n), make([]string, n), make([]*string, n), make([]string, n)
	s := "S"
	for i, c := range Concepts {
		ids[i], names[i], domains[i], vocabs[i], classes[i], codes[i] = c.ID, c.Name, c.Domain, c.Vocabulary, c.Class, c.Code
		if c.Standard {
			std[i] = &s
		}
	}
	tag, err := conn.Exec(ctx, `INSERT INTO omop.concept (concept_id, concept_name, domain_id, vocabulary_id,
		concept_class_id, standard_concept, concept_code, valid_start_date, valid_end_date)
		SELECT id, name, domain, vocab, class, std, code, DATE '1970-01-01', DATE '2099-12-31'
		FROM unnest($1::int[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
			AS c(id, name, domain, vocab, class, std, code)
		ON CONFLICT (concept_id) DO NOTHING`, ids, names, domains, vocabs, classes, std, codes)
	if err != nil {
		return 0, fmt.Errorf("synth: insert concepts: %w", err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO omop.concept_ancestor
		SELECT id, id, 0, 0 FROM unnest($1::int[]) AS c(id)
		WHERE NOT EXISTS (SELECT 1 FROM omop.concept_ancestor a
			WHERE a.ancestor_concept_id = c.id AND a.descendant_concept_id = c.id)`, ids); err != nil {
		return 0, fmt.Errorf("synth: insert concept ancestors: %w", err)
	}
	return tag.RowsAffected(), nil
}

// index is one CREATE INDEX statement of sql/20_indexes.sql.
type index struct {
	name, schema, table, create string
}

var createIndexRE = regexp.MustCompile(`(?is)CREATE\s+INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)\s+ON\s+(?:(\w+)\.)?(\w+)[^;]*;`)

// secondaryIndexes parses the index script.
func secondaryIndexes() []index {
	var out []index
	for _, m := range createIndexRE.FindAllStringSubmatch(omopsql.Indexes(), -1) {
		schema := m[2]
		if schema == "" {
			schema = "omop"
		}
		out = append(out, index{name: m[1], schema: schema, table: m[3], create: m[0]})
	}
	return out
}

// runParallel runs one statement per item on two connections, items of the
// largest tables first.
func runParallel[T any](ctx context.Context, dsn string, items []T, rows map[string]int64, stmt func(T) string, table func(T) string) error {
	queue := append([]T(nil), items...)
	sort.SliceStable(queue, func(i, j int) bool { return rows[table(queue[i])] > rows[table(queue[j])] })
	work := make(chan T, len(queue))
	for _, it := range queue {
		work <- it
	}
	close(work)
	const workers = 2
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				errs[w] = err
				return
			}
			defer conn.Close(context.WithoutCancel(ctx))
			if _, err := conn.Exec(ctx, "SET maintenance_work_mem = '256MB'"); err != nil {
				errs[w] = err
				return
			}
			for it := range work {
				if _, err := conn.Exec(ctx, stmt(it)); err != nil {
					errs[w] = fmt.Errorf("%s: %w", stmt(it), err)
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// batch is a run of encoded rows of one table.
type batch struct {
	buf  *[]byte
	rows int64
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, flushSize+64<<10); return &b }}

// progress serialises Progress calls.
type progress struct {
	mu sync.Mutex
	fn func(string, int64)
}

func (p *progress) call(table string, rows int64) {
	if p.fn == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fn(table, rows)
}

// loadTables streams every table through its own COPY while one generator
// produces all tables' rows person by person, and returns the rows loaded
// per table.
func loadTables(ctx context.Context, dsn string, opts *Options, report *progress) (map[string]int64, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	chans := make([]chan batch, len(tables))
	for i := range chans {
		chans[i] = make(chan batch, 4)
	}
	var (
		failed   atomic.Bool
		copied   sync.WaitGroup // every COPY has finished, well or not
		loaders  sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		rows     = make(map[string]int64, len(tables))
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
		failed.Store(true)
		cancel(err)
	}
	copied.Add(len(tables))
	for i, t := range tables {
		loaders.Go(func() {
			n, err := loadTable(ctx, dsn, t, chans[i], opts.Truncate, report, &copied, &failed, fail)
			if err != nil {
				return
			}
			mu.Lock()
			rows[t.name] = n
			mu.Unlock()
		})
	}

	generate(ctx, opts, chans)
	loaders.Wait()
	if firstErr != nil {
		return rows, firstErr
	}
	return rows, nil
}

// generate encodes the slice's persons into per-table batches and closes
// the channels when done or when ctx ends.
func generate(ctx context.Context, opts *Options, chans []chan batch) {
	defer func() {
		for _, c := range chans {
			close(c)
		}
	}()
	cur := make([]batch, len(tables))
	for i := range cur {
		cur[i].buf = bufPool.Get().(*[]byte)
	}
	send := func(i int) bool {
		select {
		case chans[i] <- cur[i]:
			cur[i] = batch{buf: bufPool.Get().(*[]byte)}
			return true
		case <-ctx.Done():
			return false
		}
	}
	var p person
	var e enc
	ok := true
	opts.slicePersons(func(id int64) bool {
		p.generate(opts.Seed, id)
		for i, t := range tables {
			e.b = *cur[i].buf
			cur[i].rows += t.write(&e, &p)
			*cur[i].buf = e.b
			if len(e.b) >= flushSize && !send(i) {
				ok = false
				return false
			}
		}
		return true
	})
	if ok {
		for i := range cur {
			if cur[i].rows > 0 && !send(i) {
				break
			}
		}
	}
}

// loadTable runs one table's COPY in a transaction, waits until every other
// table's COPY has finished, and commits only if all succeeded. On failure it
// calls fail before letting the other tables go on, so that they roll back.
func loadTable(ctx context.Context, dsn string, t table, in <-chan batch, truncate bool, report *progress,
	copied *sync.WaitGroup, failed *atomic.Bool, fail func(error)) (n int64, err error) {
	r := &copyReader{ctx: ctx, in: in, table: t.name, report: report, pending: copyHeader, next: progressStep}
	copyDone := false
	finishCopy := func() {
		if !copyDone {
			copyDone = true
			copied.Done()
		}
	}
	defer func() {
		if err != nil {
			fail(fmt.Errorf("synth: load %s: %w", t.name, err))
		}
		r.drain()
		finishCopy()
	}()

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }() // a no-op after commit
	with := "FORMAT binary"
	if truncate {
		if _, err := tx.Exec(ctx, "TRUNCATE omop."+t.name); err != nil {
			return 0, err
		}
		with += ", FREEZE" // rows of a table emptied in this transaction need no later vacuum
	}
	tag, err := conn.PgConn().CopyFrom(ctx, r, fmt.Sprintf("COPY omop.%s (%s) FROM STDIN WITH (%s)", t.name, t.columns, with))
	if err != nil {
		return 0, err
	}
	finishCopy()
	copied.Wait()
	if failed.Load() {
		return 0, errors.New("rolled back: another table failed")
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

// copyReader presents a table's batches as one binary COPY stream. The COPY
// reads it from a goroutine that may outlive a failed CopyFrom call, hence
// the mutex.
type copyReader struct {
	ctx    context.Context
	in     <-chan batch
	table  string
	report *progress

	mu      sync.Mutex
	closed  bool   // drained: every later Read fails
	pending []byte // header or trailer bytes still to be read
	done    bool   // the trailer has been queued
	cur     batch
	off     int
	rows    int64
	next    int64 // row count of the next intermediate report
}

func (r *copyReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, errors.New("the load was abandoned")
	}
	if len(r.pending) > 0 {
		n := copy(p, r.pending)
		r.pending = r.pending[n:]
		return n, nil
	}
	if r.done {
		return 0, io.EOF
	}
	for r.cur.buf == nil || r.off >= len(*r.cur.buf) {
		r.release()
		select {
		case b, ok := <-r.in:
			if !ok {
				if err := context.Cause(r.ctx); err != nil {
					return 0, err
				}
				r.done = true
				n := copy(p, copyTrailer)
				r.pending = copyTrailer[n:]
				return n, nil
			}
			r.cur, r.off = b, 0
		case <-r.ctx.Done():
			return 0, context.Cause(r.ctx)
		}
	}
	n := copy(p, (*r.cur.buf)[r.off:])
	r.off += n
	if r.off >= len(*r.cur.buf) {
		r.rows += r.cur.rows
		if r.rows >= r.next {
			r.report.call(r.table, r.rows)
			for r.next <= r.rows {
				r.next += progressStep
			}
		}
	}
	return n, nil
}

// release returns the current batch's buffer to the pool.
func (r *copyReader) release() {
	if r.cur.buf != nil {
		*r.cur.buf = (*r.cur.buf)[:0]
		bufPool.Put(r.cur.buf)
		r.cur = batch{}
	}
}

// drain closes the reader and discards what the generator still sends
// after the COPY ended early, so that it never blocks on this table. It is
// called after the load's context has been cancelled or the COPY has read
// everything, so a concurrent Read returns promptly.
func (r *copyReader) drain() {
	r.mu.Lock()
	r.closed = true
	r.release()
	r.mu.Unlock()
	for b := range r.in {
		*b.buf = (*b.buf)[:0]
		bufPool.Put(b.buf)
	}
}
