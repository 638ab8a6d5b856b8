package cohort

import (
	"context"
	"fmt"
	"iter"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Counts are a cohort's row and distinct-subject counts.
type Counts struct {
	Rows, Subjects int64
}

// IDs streams sorted distinct ids; nil means the column is absent.
type IDs = iter.Seq2[string, error]

// Freeze counts the cohort of the validated query q and hands save the
// counts and the sorted (bytewise) distinct person and accession ids, all
// read from one consistent snapshot of the database. save decides whether to
// persist (the floor check) and consumes the id streams; nothing is held in
// memory here.
func (e *Engine) Freeze(ctx context.Context, q string, shape Shape, queryHash string,
	save func(c Counts, persons, accessions IDs) error) error {
	if !shape.Countable() {
		return fmt.Errorf("cohort: freezing needs a %s or %s column", PersonColumn, AccessionColumn)
	}
	err := e.readOnly(ctx, func(tx pgx.Tx) error {
		c, err := e.counts(ctx, tx, q, shape)
		if err != nil {
			return err
		}
		var persons, accessions IDs
		if shape.Person >= 0 {
			persons = distinctIDs(ctx, tx, q, shape, shape.Person)
		}
		if shape.Accession >= 0 {
			accessions = distinctIDs(ctx, tx, q, shape, shape.Accession)
		}
		return save(c, persons, accessions)
	})
	return e.classify(ctx, err, queryHash)
}

func cohortCTE(q string, s Shape) string {
	aliases := make([]string, s.All)
	for i := range aliases {
		aliases[i] = "x" + strconv.Itoa(i+1)
	}
	for _, c := range s.Columns {
		aliases[c.Index] = alias(c.Index)
	}
	return fmt.Sprintf("WITH flip_cohort__(%s) AS (\n%s\n)\n", strings.Join(aliases, ", "), q)
}

func (e *Engine) counts(ctx context.Context, tx pgx.Tx, q string, s Shape) (Counts, error) {
	var c Counts
	var sql string
	if s.Person >= 0 {
		p := alias(s.Columns[s.Person].Index)
		sql = cohortCTE(q, s) + fmt.Sprintf("SELECT count(*), count(DISTINCT %s) FROM flip_cohort__", p)
	} else {
		a := alias(s.Columns[s.Accession].Index)
		sql = cohortCTE(q, s) + fmt.Sprintf(`SELECT (SELECT count(*) FROM flip_cohort__),
  (SELECT count(DISTINCT io.person_id) FROM omop.image_occurrence io
   WHERE io.accession_id IN (SELECT %s::text FROM flip_cohort__ WHERE %s IS NOT NULL))`, a, a)
	}
	if err := tx.QueryRow(ctx, sql).Scan(&c.Rows, &c.Subjects); err != nil {
		return c, err
	}
	c.Subjects = min(c.Subjects, c.Rows)
	return c, nil
}

func distinctIDs(ctx context.Context, tx pgx.Tx, q string, s Shape, col int) IDs {
	a := alias(s.Columns[col].Index)
	sql := cohortCTE(q, s) + fmt.Sprintf(
		`SELECT DISTINCT %s::text COLLATE "C" AS id FROM flip_cohort__ WHERE %s IS NOT NULL ORDER BY 1`, a, a)
	return func(yield func(string, error) bool) {
		rows, err := tx.Query(ctx, sql)
		if err != nil {
			yield("", err)
			return
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				yield("", err)
				return
			}
			if !yield(id, nil) {
				return
			}
		}
		if err := rows.Err(); err != nil {
			yield("", err)
		}
	}
}

// Stream runs the validated query q and calls fn for each row, in order,
// with the result's fields (duplicated names included; callers skip them by
// Shape) and the row's values. Rows are never buffered.
func (e *Engine) Stream(ctx context.Context, q, queryHash string,
	fn func(fields []pgconn.FieldDescription, values []any) error) error {
	err := e.readOnly(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, q)
		if err != nil {
			return err
		}
		defer rows.Close()
		fields := rows.FieldDescriptions()
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				return err
			}
			if err := fn(fields, vals); err != nil {
				return err
			}
		}
		return rows.Err()
	})
	return e.classify(ctx, err, queryHash)
}

// ImagingAccessions keeps the ids that exist in omop.image_occurrence, in
// bytewise order, and counts the distinct persons behind them.
func (e *Engine) ImagingAccessions(ctx context.Context, ids []string) (kept []string, subjects int64, err error) {
	if len(ids) == 0 {
		return nil, 0, nil
	}
	// One statement: the id list crosses the wire once.
	err = e.readOnly(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT
  coalesce(array_agg(DISTINCT io.accession_id::text COLLATE "C" ORDER BY io.accession_id::text COLLATE "C"), '{}'),
  count(DISTINCT io.person_id)
FROM omop.image_occurrence io WHERE io.accession_id = ANY($1::text[])`, ids).Scan(&kept, &subjects)
	})
	return kept, subjects, e.classify(ctx, err, "")
}
