package cohort

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/flip-trust/node/shared/disclosure"
)

// The subject columns a cohort query exposes.
const (
	PersonColumn    = "person_id"
	AccessionColumn = "accession_id"
)

// Chart names of FLIP's statistics response.
const (
	ChartCounts   = "Counts"
	ChartNulls    = "Nulls"
	ChartAge      = "Age Distribution"
	ChartSex      = "Sex Distribution"
	ChartModality = "Modality Distribution"
	OtherLabel    = "Other"
	UnknownLabel  = "Unknown"
)

// Column is one result column of a cohort query.
type Column struct {
	Name string
	OID  uint32
	// Index is the column's position in the query's result.
	Index int
}

// Shape is the distinct-named columns of a query and its subject columns.
type Shape struct {
	// Columns are the result columns, first occurrence of each name only.
	Columns []Column
	// All is the number of result columns, duplicates included.
	All int
	// Person and Accession are indexes into Columns, or -1.
	Person, Accession int
}

// Countable reports whether the query exposes a subject column.
func (s Shape) Countable() bool { return s.Person >= 0 || s.Accession >= 0 }

// Describe plans sql without running it and returns its result shape.
func (e *Engine) Describe(ctx context.Context, sql, queryHash string) (Shape, error) {
	var shape Shape
	err := e.readOnly(ctx, func(tx pgx.Tx) error {
		sd, err := tx.Conn().Prepare(ctx, "", sql)
		if err != nil {
			return err
		}
		shape = shapeOf(sd.Fields)
		return nil
	})
	return shape, e.classify(ctx, err, queryHash)
}

func shapeOf(fields []pgconn.FieldDescription) Shape {
	s := Shape{All: len(fields), Person: -1, Accession: -1}
	seen := map[string]bool{}
	for i, f := range fields {
		if seen[f.Name] {
			continue
		}
		seen[f.Name] = true
		switch f.Name {
		case PersonColumn:
			s.Person = len(s.Columns)
		case AccessionColumn:
			s.Accession = len(s.Columns)
		}
		s.Columns = append(s.Columns, Column{Name: f.Name, OID: f.DataTypeOID, Index: i})
	}
	return s
}

// Result is one bucket of a chart.
type Result struct {
	Value string `json:"value"`
	Count int64  `json:"count"`
}

// Chart is one named statistic.
type Chart struct {
	Name    string   `json:"name"`
	Results []Result `json:"results"`
}

// Stats are a cohort's statistics before disclosure control.
type Stats struct {
	// Rows is the number of result rows; Subjects the distinct subjects,
	// capped at Rows (accession ids are not unique).
	Rows, Subjects int64
	// Charts in FLIP's order: Counts, Nulls, Age, Sex, Modality.
	Charts []Chart
}

// column alias inside the statistics statement.
func alias(i int) string { return "c" + strconv.Itoa(i+1) }

// decades is the number of age-decade buckets of DecadeIndexExpr (0-9 ...
// 150-159); one more bucket holds unknown birth dates.
const decades = 16

// statisticsSQL builds the single aggregate statement computing everything
// FLIP's statistics response needs from the validated query q. The cohort's
// rows never leave the database: the result is a few dozen rows.
//
// The cohort is a NOT MATERIALIZED CTE, so every branch plans it inline with
// the base tables' statistics (and in parallel where PostgreSQL can): once
// for the row and column totals, once as the person ids whose persons are
// counted by sex and age decade (a semi-join, so each subject counts once),
// and once as the accessions whose studies are counted per modality. Each
// result row carries:
//
//	by_pid, sex, modality, decade, subjects, found, studies, nrows, counts[]
//
// An accession-only cohort counts its subjects as the distinct persons of
// its accessions in image_occurrence; see accessionSQL.
func statisticsSQL(q string, s Shape) string {
	if s.Person < 0 {
		return accessionSQL(q, s)
	}
	var b strings.Builder
	b.WriteString(strings.Replace(cohortCTE(q, s), " AS (\n", " AS NOT MATERIALIZED (\n", 1))
	counts := make([]string, len(s.Columns))
	for i, c := range s.Columns {
		counts[i] = fmt.Sprintf("count(%s)", alias(c.Index))
	}
	pc := s.Columns[s.Person]
	pid := alias(pc.Index)
	in := "p.person_id IN (SELECT " + pid + " FROM flip_cohort__)"
	if !isNumeric(pc.OID) {
		in = "p.person_id::text IN (SELECT " + pid + "::text FROM flip_cohort__)"
	}
	fmt.Fprintf(&b, `SELECT true AS by_pid, NULL::text AS sex, NULL::text AS modality, NULL::int AS decade,
  0::bigint AS subjects, 0::bigint AS found, 0::bigint AS studies, count(*)::bigint AS nrows, ARRAY[%s]::bigint[] AS counts
FROM flip_cohort__
UNION ALL
SELECT true, p.gender_source_value::text, NULL, %s, count(*), count(*), 0, 0, NULL
FROM omop.person p WHERE %s
GROUP BY 2, 4`, strings.Join(counts, ", "), DecadeIndexExpr("p.birth_datetime"), in)
	if s.Accession >= 0 {
		b.WriteString(modalitySQL(alias(s.Columns[s.Accession].Index)))
	}
	return b.String()
}

// accessionSQL is statisticsSQL for a cohort without person_id: row and
// column totals, studies per modality, and the distinct persons behind its
// accessions, in the same columns (kind t, m and the grand-total row).
func accessionSQL(q string, s Shape) string {
	var b strings.Builder
	b.WriteString(cohortCTE(q, s))
	counts := make([]string, len(s.Columns))
	sums := make([]string, len(s.Columns))
	for i, c := range s.Columns {
		counts[i] = fmt.Sprintf("count(%s) AS k%d", alias(c.Index), i)
		sums[i] = fmt.Sprintf("sum(g.k%d)", i)
	}
	a := alias(s.Columns[s.Accession].Index)
	fmt.Fprintf(&b, `SELECT g.total AS by_pid, NULL::text AS sex,
  COALESCE(c.concept_name, io.modality_concept_id::text)::text AS modality, NULL::int AS decade,
  count(DISTINCT io.person_id)::bigint AS subjects, 0::bigint AS found,
  count(io.image_occurrence_id)::bigint AS studies,
  coalesce(sum(g.n), 0)::bigint AS nrows, ARRAY[%s]::bigint[] AS counts
FROM (SELECT GROUPING(%s::text) = 1 AS total, %s::text AS acc, count(*) AS n, %s
      FROM flip_cohort__ GROUP BY GROUPING SETS ((%s::text), ())) g
LEFT JOIN omop.image_occurrence io ON NOT g.total AND io.accession_id = g.acc
LEFT JOIN omop.concept c ON c.concept_id = io.modality_concept_id
GROUP BY GROUPING SETS ((1, 3), ())`, strings.Join(sums, ", "), a, a, strings.Join(counts, ", "), a)
	return b.String()
}

// DecadeIndexExpr is the age decade index (age / 10, capped at 15) of a
// birth timestamp as of today: 10 times it equals
// floor(date_part('year', age(current_date, birth)) / 10) * 10 for ages under
// 160, but it is found by a binary search over the decade boundaries
// (computed once per statement) instead of interval arithmetic per row.
func DecadeIndexExpr(birth string) string {
	return fmt.Sprintf("(15 - width_bucket(%s - interval '1 microsecond', "+
		"ARRAY(SELECT current_date::timestamp - make_interval(years => 10 * k) FROM generate_series(15, 1, -1) AS k)))", birth)
}

func isNumeric(oid uint32) bool {
	switch oid {
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.NumericOID, pgtype.Float4OID, pgtype.Float8OID:
		return true
	}
	return false
}

// Statistics plans the validated query q and, when it exposes a subject
// column, runs the aggregate statement on it and returns the raw statistics
// with the query's shape; for an uncountable shape the statistics are nil.
// Charts are not yet disclosure-controlled: see Disclose.
func (e *Engine) Statistics(ctx context.Context, q, queryHash string) (*Stats, Shape, error) {
	var (
		shape         Shape
		st            = &Stats{}
		counts        []int64
		ages          = make([]int64, decades+1)
		sexes         = map[string]int64{}
		modalities    = map[string]int64{}
		accessionOnly bool
	)
	// The query is planned and aggregated in one transaction.
	err := e.readOnlyJIT(ctx, false, func(tx pgx.Tx) error {
		sd, err := tx.Conn().Prepare(ctx, "", q)
		if err != nil {
			return err
		}
		if shape = shapeOf(sd.Fields); !shape.Countable() {
			return nil
		}
		counts, accessionOnly = make([]int64, len(shape.Columns)), shape.Person < 0
		sql := statisticsSQL(q, shape)
		if !accessionOnly && !e.joinBack && isNumeric(shape.Columns[shape.Person].OID) {
			if pr, ok := withPersonAttributes(q); ok && e.personIDUnique(ctx, tx) {
				sql = personRowSQL(pr, shape)
			}
		}
		rows, err := tx.Query(ctx, sql, pgx.QueryExecModeExec)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				byPID                       *bool
				sex, modality               *string
				decade                      *int32
				subjects, found, studies, n int64
				ks                          []*int64
			)
			if err := rows.Scan(&byPID, &sex, &modality, &decade, &subjects, &found, &studies, &n, &ks); err != nil {
				return err
			}
			switch {
			case accessionOnly && byPID == nil: // the grand total
				st.Subjects = subjects
			case accessionOnly && *byPID: // row and column totals
				st.Rows = n
				addAll(counts, ks)
			case accessionOnly:
				if studies > 0 {
					modalities[labelOf(modality)] += studies
				}
			case *byPID:
				st.Rows += n
				st.Subjects += subjects
				addAll(counts, ks)
				if found > 0 {
					sexes[labelOf(sex)] += found
					if decade != nil && *decade >= 0 && int(*decade) < decades {
						ages[*decade] += found
					} else {
						ages[decades] += found
					}
				}
			default:
				if studies > 0 {
					modalities[labelOf(modality)] += studies
				}
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, shape, e.classify(ctx, err, queryHash)
	}
	if !shape.Countable() {
		return nil, shape, nil
	}
	st.Subjects = min(st.Subjects, st.Rows)

	var countRes, nullRes []Result
	for i, c := range shape.Columns {
		if st.Rows > 0 && counts[i] == 0 {
			continue // an entirely null column is dropped, as FLIP does
		}
		label := strings.ReplaceAll(c.Name, "_", "\n")
		countRes = append(countRes, Result{Value: label, Count: counts[i]})
		nullRes = append(nullRes, Result{Value: label, Count: st.Rows - counts[i]})
	}
	st.Charts = append(st.Charts, Chart{Name: ChartCounts, Results: orEmpty(countRes)}, Chart{Name: ChartNulls, Results: orEmpty(nullRes)})
	if shape.Person >= 0 {
		age := make([]Result, 0, decades+1)
		for d := 0; d < decades; d++ {
			if ages[d] > 0 {
				age = append(age, Result{Value: fmt.Sprintf("%d-%d", 10*d, 10*d+9), Count: ages[d]})
			}
		}
		if ages[decades] > 0 {
			age = append(age, Result{Value: UnknownLabel, Count: ages[decades]})
		}
		sex := make([]Result, 0, len(sexes))
		for k, v := range sexes {
			sex = append(sex, Result{Value: k, Count: v})
		}
		sortByCount(sex)
		st.Charts = append(st.Charts, Chart{Name: ChartAge, Results: age}, Chart{Name: ChartSex, Results: sex})
	}
	if shape.Accession >= 0 {
		mod := make([]Result, 0, len(modalities))
		for k, v := range modalities {
			mod = append(mod, Result{Value: k, Count: v})
		}
		sortByCount(mod)
		st.Charts = append(st.Charts, Chart{Name: ChartModality, Results: mod})
	}
	return st, shape, nil
}

// Bucket is one released bucket of a chart: its count has passed the
// disclosure layer.
type Bucket struct {
	Value string          `json:"value"`
	Count disclosure.Cell `json:"count"`
}

// ReleasedChart is a chart as it leaves the trust.
type ReleasedChart struct {
	Name    string   `json:"name"`
	Results []Bucket `json:"results"`
}

// Release passes the charts through the disclosure layer, keeping FLIP's
// wire shape (a withheld bucket is left out, never sent as 0):
//
//   - Age and Sex count distinct persons and add up to (at most) the
//     released record count, so each is a one-way table with a released
//     total: small buckets and their complements are withheld and their sum
//     (at least the floor) is released as "Other".
//   - Modality counts studies, which no released total constrains: small
//     buckets are withheld and their sum is released as "Other" only when
//     it reaches the floor (FLIP's rule).
//   - Counts and Nulls are row counts of each column: a column's count and
//     null count add up to the row count, so each column is a two-cell table
//     with a released total; a column with a withheld cell is left out of
//     both charts.
func (st *Stats) Release(p disclosure.Policy) []ReleasedChart {
	out := make([]ReleasedChart, 0, len(st.Charts))
	var counts, nulls []Result
	for _, c := range st.Charts {
		switch c.Name {
		case ChartCounts:
			counts = c.Results
		case ChartNulls:
			nulls = c.Results
		}
	}
	var rc, rn []Bucket
	if len(counts) == len(nulls) {
		for i := range counts {
			v := p.Vector([]disclosure.Subjects{disclosure.Subjects(counts[i].Count), disclosure.Subjects(nulls[i].Count)}, true)
			if v.Cells[0].IsSuppressed() || v.Cells[1].IsSuppressed() {
				continue
			}
			rc = append(rc, Bucket{Value: counts[i].Value, Count: v.Cells[0]})
			rn = append(rn, Bucket{Value: nulls[i].Value, Count: v.Cells[1]})
		}
	}
	for _, c := range st.Charts {
		switch c.Name {
		case ChartCounts:
			out = append(out, ReleasedChart{Name: c.Name, Results: orEmptyB(rc)})
		case ChartNulls:
			out = append(out, ReleasedChart{Name: c.Name, Results: orEmptyB(rn)})
		case ChartAge, ChartSex:
			out = append(out, ReleasedChart{Name: c.Name, Results: fold(p, c.Results, true)})
		default:
			out = append(out, ReleasedChart{Name: c.Name, Results: fold(p, c.Results, false)})
		}
	}
	return out
}

// fold releases one distribution: released buckets in their order, then the
// withheld ones' sum as "Other" when the layer releases it.
func fold(p disclosure.Policy, results []Result, withTotal bool) []Bucket {
	n := make([]disclosure.Subjects, len(results))
	for i, r := range results {
		n[i] = disclosure.Subjects(r.Count)
	}
	v := p.Vector(n, withTotal)
	out := make([]Bucket, 0, len(results))
	var other disclosure.Subjects
	for i, r := range results {
		if v.Cells[i].IsSuppressed() {
			other += n[i]
			continue
		}
		if r.Count > 0 {
			out = append(out, Bucket{Value: r.Value, Count: v.Cells[i]})
		}
	}
	if other > 0 && (!withTotal || !v.Total.IsSuppressed()) {
		// With a released total the withheld sum is implied by it (and
		// Vector keeps it at or above the floor); without one it is released
		// only when it clears the floor by itself.
		if c := p.Cell(other); !c.IsSuppressed() {
			out = append(out, Bucket{Value: OtherLabel, Count: c})
		}
	}
	return out
}

// Disclose is Release at a floor of threshold without rounding, in the raw
// chart type (for callers that inspect values; outgoing payloads use
// Release).
func (st *Stats) Disclose(threshold int) []Chart {
	p := disclosure.MustPolicy(int64(max(threshold, 1)), 0, 0)
	rel := st.Release(p)
	out := make([]Chart, len(rel))
	for i, c := range rel {
		out[i] = Chart{Name: c.Name, Results: unrelease(c.Results)}
	}
	return out
}

// FoldSmall is FLIP's make_other_category through the disclosure layer:
// buckets under min are removed and their total is added as "Other" only
// when it reaches min, so a small bucket is never revealed by relabelling it.
func FoldSmall(results []Result, min int64) []Result {
	return unrelease(fold(disclosure.MustPolicy(max(min, 1), 0, 0), results, false))
}

func unrelease(bs []Bucket) []Result {
	out := make([]Result, len(bs))
	for i, b := range bs {
		out[i] = Result{Value: b.Value, Count: b.Count.OrZero()}
	}
	return out
}

func orEmptyB(bs []Bucket) []Bucket {
	if bs == nil {
		return []Bucket{}
	}
	return bs
}

func sortByCount(rs []Result) {
	sort.SliceStable(rs, func(i, j int) bool {
		if rs[i].Count != rs[j].Count {
			return rs[i].Count > rs[j].Count
		}
		return rs[i].Value < rs[j].Value
	})
}

func orEmpty(rs []Result) []Result {
	if rs == nil {
		return []Result{}
	}
	return rs
}

// addAll adds the non-null values of src to dst, position by position.
func addAll(dst []int64, src []*int64) {
	for i, v := range src {
		if i < len(dst) && v != nil {
			dst[i] += *v
		}
	}
}

func labelOf(p *string) string {
	if p == nil || *p == "" {
		return UnknownLabel
	}
	return *p
}

// VocabularyLoaded probes omop.concept_ancestor: an empty vocabulary is the
// usual reason every concept-joined cohort comes back empty.
func (e *Engine) VocabularyLoaded(ctx context.Context) (bool, error) {
	var found bool
	err := e.readOnly(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, "SELECT true FROM omop.concept_ancestor LIMIT 1").Scan(&found)
		if err == pgx.ErrNoRows {
			return nil
		}
		return err
	})
	return found, err
}
