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

// statisticsSQL builds the single aggregate statement computing everything
// FLIP's statistics response needs from the validated query q. The cohort's
// rows never leave the database: the result is a few dozen rows.
func statisticsSQL(q string, s Shape) string {
	var b strings.Builder
	b.WriteString(strings.TrimSuffix(cohortCTE(q, s), "\n"))
	counts := make([]string, len(s.Columns))
	sums := make([]string, len(s.Columns))
	for i, c := range s.Columns {
		counts[i] = fmt.Sprintf("count(%s) AS k%d", alias(c.Index), i)
		sums[i] = fmt.Sprintf("sum(s.k%d)", i)
	}
	if s.Accession >= 0 {
		a := alias(s.Columns[s.Accession].Index)
		fmt.Fprintf(&b, ",\nflip_acc__ AS (SELECT DISTINCT %s::text AS acc FROM flip_cohort__ WHERE %s IS NOT NULL)", a, a)
	}
	const head = "SELECT %s::text AS kind, %s::bool AS nopid, %s::bool AS found, %s::int AS decade, %s::text AS label, %s::bigint AS subjects, %s::bigint AS nrows, %s::bigint[] AS counts"
	var parts []string
	if s.Person >= 0 {
		pc := s.Columns[s.Person]
		pid := alias(pc.Index)
		fmt.Fprintf(&b, ",\nflip_per__ AS (SELECT %s AS pid, count(*) AS n, %s FROM flip_cohort__ GROUP BY %s)",
			pid, strings.Join(counts, ", "), pid)
		join := "p.person_id = s.pid"
		if !isNumeric(pc.OID) {
			join = "p.person_id::text = s.pid::text"
		}
		parts = append(parts, fmt.Sprintf(head+`
FROM flip_per__ s LEFT JOIN omop.person p ON %s
GROUP BY 2, 3, 4, 5`,
			"'g'", "(s.pid IS NULL)", "(p.person_id IS NOT NULL)",
			DecadeExpr("p.birth_datetime"),
			"p.gender_source_value", "count(*)", "sum(s.n)", "ARRAY["+strings.Join(sums, ", ")+"]", join))
	} else {
		plain := make([]string, len(s.Columns))
		for i, c := range s.Columns {
			plain[i] = "count(" + alias(c.Index) + ")"
		}
		parts = append(parts, fmt.Sprintf(head+"\nFROM flip_cohort__",
			"'t'", "NULL", "NULL", "NULL", "NULL", "NULL", "count(*)", "ARRAY["+strings.Join(plain, ", ")+"]"))
		parts = append(parts, fmt.Sprintf(head+"\nFROM omop.image_occurrence io JOIN flip_acc__ a ON io.accession_id = a.acc",
			"'s'", "NULL", "NULL", "NULL", "NULL", "count(DISTINCT io.person_id)", "NULL", "NULL"))
	}
	if s.Accession >= 0 {
		parts = append(parts, fmt.Sprintf(head+`
FROM omop.image_occurrence io JOIN flip_acc__ a ON io.accession_id = a.acc
LEFT JOIN omop.concept c ON c.concept_id = io.modality_concept_id
GROUP BY 5`,
			"'m'", "NULL", "NULL", "NULL", "COALESCE(c.concept_name, io.modality_concept_id::text)",
			"count(DISTINCT io.image_occurrence_id)", "NULL", "NULL"))
	}
	b.WriteString("\n")
	b.WriteString(strings.Join(parts, "\nUNION ALL\n"))
	return b.String()
}

// DecadeExpr is the age decade of a birth timestamp as of today: the same
// value as floor(date_part('year', age(current_date, birth)) / 10) * 10 for
// ages under 150, but found by a binary search over the decade boundaries
// (computed once per statement) instead of interval arithmetic per row.
func DecadeExpr(birth string) string {
	return fmt.Sprintf("(10 * (15 - width_bucket(%s - interval '1 microsecond', "+
		"ARRAY(SELECT current_date::timestamp - make_interval(years => 10 * k) FROM generate_series(15, 1, -1) AS k))))", birth)
}

func isNumeric(oid uint32) bool {
	switch oid {
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.NumericOID, pgtype.Float4OID, pgtype.Float8OID:
		return true
	}
	return false
}

// Statistics runs the aggregate statement for the validated query q (whose
// shape must be countable) and returns the raw statistics. Charts are not yet
// disclosure-controlled: see Disclose.
func (e *Engine) Statistics(ctx context.Context, q string, shape Shape, queryHash string) (*Stats, error) {
	if !shape.Countable() {
		return nil, fmt.Errorf("cohort: statistics need a %s or %s column", PersonColumn, AccessionColumn)
	}
	sql := statisticsSQL(q, shape)
	st := &Stats{}
	counts := make([]int64, len(shape.Columns))
	ages := map[int]int64{}
	unknownAge := int64(0)
	sexes := map[string]int64{}
	var modalities []Result
	err := e.readOnly(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, sql)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				kind         string
				nopid, found *bool
				decade       *int32
				label        *string
				subjects, n  *int64
				ks           []*int64
			)
			if err := rows.Scan(&kind, &nopid, &found, &decade, &label, &subjects, &n, &ks); err != nil {
				return err
			}
			switch kind {
			case "g", "t":
				st.Rows += val(n)
				for i, k := range ks {
					if i < len(counts) {
						counts[i] += val(k)
					}
				}
				if kind == "t" || *nopid {
					continue
				}
				st.Subjects += val(subjects)
				if !*found {
					continue
				}
				if decade == nil {
					unknownAge += val(subjects)
				} else {
					ages[int(*decade)] += val(subjects)
				}
				sexes[labelOf(label)] += val(subjects)
			case "s":
				st.Subjects = val(subjects)
			case "m":
				modalities = append(modalities, Result{Value: labelOf(label), Count: val(subjects)})
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, e.classify(ctx, err, queryHash)
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
		decades := make([]int, 0, len(ages))
		for d := range ages {
			decades = append(decades, d)
		}
		sort.Ints(decades)
		age := make([]Result, 0, len(decades)+1)
		for _, d := range decades {
			age = append(age, Result{Value: fmt.Sprintf("%d-%d", d, d+9), Count: ages[d]})
		}
		if unknownAge > 0 {
			age = append(age, Result{Value: UnknownLabel, Count: unknownAge})
		}
		sex := make([]Result, 0, len(sexes))
		for k, v := range sexes {
			sex = append(sex, Result{Value: k, Count: v})
		}
		sortByCount(sex)
		st.Charts = append(st.Charts, Chart{Name: ChartAge, Results: age}, Chart{Name: ChartSex, Results: sex})
	}
	if shape.Accession >= 0 {
		sortByCount(modalities)
		st.Charts = append(st.Charts, Chart{Name: ChartModality, Results: orEmpty(modalities)})
	}
	return st, nil
}

// Disclose applies the small-cell rule to the distribution charts (Counts and
// Nulls describe a cohort that already cleared the floor and are kept).
func (st *Stats) Disclose(threshold int) []Chart {
	out := make([]Chart, len(st.Charts))
	for i, c := range st.Charts {
		if c.Name == ChartCounts || c.Name == ChartNulls {
			out[i] = c
			continue
		}
		out[i] = Chart{Name: c.Name, Results: FoldSmall(c.Results, int64(threshold))}
	}
	return out
}

// FoldSmall removes buckets under min and adds their total as "Other" only
// when that total itself reaches min, so a small bucket is never revealed by
// relabelling it.
func FoldSmall(results []Result, min int64) []Result {
	out := make([]Result, 0, len(results))
	var other int64
	for _, r := range results {
		if r.Count < min {
			other += r.Count
			continue
		}
		out = append(out, r)
	}
	if other >= min && other > 0 {
		out = append(out, Result{Value: OtherLabel, Count: other})
	}
	return out
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

func val(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
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
