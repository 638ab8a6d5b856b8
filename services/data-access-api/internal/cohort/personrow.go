package cohort

import (
	"fmt"
	"strconv"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Names of the person attributes a cohort query is extended with (see
// withPersonAttributes); they follow the query's own result columns.
const (
	sexColumn   = "flip_sex__"
	birthColumn = "flip_birth__"
)

// personRow is a validated cohort query extended with the sex and birth date
// of the omop.person row its person_id column is read from.
type personRow struct {
	// SQL is the extended query: the original result columns, then sex and
	// birth date.
	SQL string
	// OnePerPerson is true when every result row is a distinct person row
	// (the query reads omop.person alone), so no per-person de-duplication
	// is needed.
	OnePerPerson bool
}

// withPersonAttributes extends the validated query q with the sex and birth
// date of the omop.person row that its first person_id column is read from,
// when that can be told from the query's text alone: a plain SELECT (no set
// operation, DISTINCT, GROUP BY or HAVING) whose first person_id result
// column is person_id of an omop.person table in its FROM clause. The
// statistics then need no second pass over the cohort and no join back to
// omop.person. ok is false for every other query.
//
// With person_id unique in omop.person (the caller checks), the persons of
// the extended query's person_id column are exactly the omop.person rows
// whose person_id is in the cohort, each carrying its own sex and birth date.
func withPersonAttributes(q string) (pr personRow, ok bool) {
	defer func() {
		if recover() != nil {
			pr, ok = personRow{}, false
		}
	}()
	tree, err := pg_query.Parse(q)
	if err != nil || len(tree.GetStmts()) != 1 {
		return personRow{}, false
	}
	sel := tree.GetStmts()[0].GetStmt().GetSelectStmt()
	if sel == nil || sel.GetOp() != pg_query.SetOperation_SETOP_NONE || len(sel.GetDistinctClause()) > 0 ||
		len(sel.GetGroupClause()) > 0 || sel.GetHavingClause() != nil || len(sel.GetValuesLists()) > 0 ||
		sel.GetIntoClause() != nil || len(sel.GetLockingClause()) > 0 {
		return personRow{}, false
	}
	persons, ambiguous := personRefs(sel.GetFromClause())
	single := len(sel.GetFromClause()) == 1 && len(persons) == 1 && sel.GetFromClause()[0].GetRangeVar() != nil
	var ref string
	found := false
	for _, t := range sel.GetTargetList() {
		rt := t.GetResTarget()
		if rt == nil {
			return personRow{}, false
		}
		if cr := rt.GetVal().GetColumnRef(); cr != nil {
			fields := cr.GetFields()
			if last := fields[len(fields)-1]; last.GetAStar() != nil {
				// A star's columns are unknown here unless they are
				// omop.person's own, whose person_id is the one wanted.
				switch {
				case len(fields) == 1 && single:
					ref, found = onlyKey(persons), true
				case len(fields) == 2 && persons[fields[0].GetString_().GetSval()] && !ambiguous[fields[0].GetString_().GetSval()]:
					ref, found = fields[0].GetString_().GetSval(), true
				default:
					return personRow{}, false
				}
				break
			}
		}
		name, known := outputName(rt)
		if !known {
			return personRow{}, false
		}
		if name != PersonColumn {
			continue
		}
		cr := rt.GetVal().GetColumnRef()
		if cr == nil {
			return personRow{}, false
		}
		fields := cr.GetFields()
		switch {
		case len(fields) == 1 && fields[0].GetString_().GetSval() == PersonColumn && single:
			ref = onlyKey(persons)
		case len(fields) == 2 && fields[1].GetString_().GetSval() == PersonColumn &&
			persons[fields[0].GetString_().GetSval()] && !ambiguous[fields[0].GetString_().GetSval()]:
			ref = fields[0].GetString_().GetSval()
		default:
			return personRow{}, false
		}
		found = true
		break
	}
	if !found {
		return personRow{}, false
	}
	col := func(name string) *pg_query.Node {
		return pg_query.MakeColumnRefNode([]*pg_query.Node{pg_query.MakeStrNode(ref), pg_query.MakeStrNode(name)}, -1)
	}
	sel.TargetList = append(sel.TargetList,
		pg_query.MakeResTargetNodeWithNameAndVal(sexColumn, col("gender_source_value"), -1),
		pg_query.MakeResTargetNodeWithNameAndVal(birthColumn, col("birth_datetime"), -1))
	out, err := pg_query.Deparse(tree)
	if err != nil {
		return personRow{}, false
	}
	return personRow{SQL: out, OnePerPerson: single && !returnsSets(sel.GetTargetList())}, true
}

func onlyKey(m map[string]bool) string {
	for k := range m {
		return k
	}
	return ""
}

// personRefs returns the names by which the omop.person tables of a FROM
// clause are referenced, and the names that more than one FROM item uses.
// Items under an aliased join are not visible by their own names and are
// left out.
func personRefs(from []*pg_query.Node) (persons, ambiguous map[string]bool) {
	persons, ambiguous = map[string]bool{}, map[string]bool{}
	seen := map[string]bool{}
	note := func(name string) {
		if seen[name] {
			ambiguous[name] = true
		}
		seen[name] = true
	}
	var visit func(n *pg_query.Node)
	visit = func(n *pg_query.Node) {
		switch {
		case n.GetRangeVar() != nil:
			rv := n.GetRangeVar()
			name := rv.GetRelname()
			if a := rv.GetAlias(); a != nil {
				name = a.GetAliasname()
				if len(a.GetColnames()) > 0 { // renamed columns
					note(name)
					return
				}
			}
			note(name)
			if rv.GetSchemaname() == "omop" && rv.GetRelname() == "person" && rv.GetCatalogname() == "" && rv.GetInh() {
				persons[name] = true
			}
		case n.GetJoinExpr() != nil:
			j := n.GetJoinExpr()
			if a := j.GetAlias(); a != nil {
				note(a.GetAliasname())
				return
			}
			visit(j.GetLarg())
			visit(j.GetRarg())
		case n.GetRangeSubselect() != nil:
			if a := n.GetRangeSubselect().GetAlias(); a != nil {
				note(a.GetAliasname())
			}
		case n.GetRangeFunction() != nil:
			if a := n.GetRangeFunction().GetAlias(); a != nil {
				note(a.GetAliasname())
			}
		default:
			// Anything else (a table sample, for one) may hide a name.
			ambiguous[""] = true
		}
	}
	for _, n := range from {
		visit(n)
	}
	if ambiguous[""] {
		return map[string]bool{}, ambiguous
	}
	return persons, ambiguous
}

// outputName is the result column name PostgreSQL gives a select-list item,
// where it can be told without the catalog; known is false where it could be
// person_id without being spelled so (a cast or a scalar subquery of it).
func outputName(rt *pg_query.ResTarget) (name string, known bool) {
	if rt.GetName() != "" {
		return rt.GetName(), true
	}
	v := rt.GetVal()
	switch {
	case v.GetColumnRef() != nil:
		f := v.GetColumnRef().GetFields()
		return f[len(f)-1].GetString_().GetSval(), true
	case v.GetFuncCall() != nil:
		f := v.GetFuncCall().GetFuncname()
		return f[len(f)-1].GetString_().GetSval(), true
	case v.GetAConst() != nil, v.GetAExpr() != nil, v.GetBoolExpr() != nil, v.GetNullTest() != nil,
		v.GetCaseExpr() != nil, v.GetCoalesceExpr() != nil, v.GetMinMaxExpr() != nil,
		v.GetSqlvalueFunction() != nil, v.GetAArrayExpr() != nil, v.GetBooleanTest() != nil:
		return "", true // "?column?", "case", "coalesce", ...: never person_id
	}
	return "", false
}

// returnsSets reports whether a select list calls a set-returning function,
// which would repeat a person's row.
func returnsSets(targets []*pg_query.Node) bool {
	found := false
	var walk func(m protoreflect.Message)
	walk = func(m protoreflect.Message) {
		if fc, ok := m.Interface().(*pg_query.FuncCall); ok {
			if f := fc.GetFuncname(); len(f) > 0 {
				switch f[len(f)-1].GetString_().GetSval() {
				case "generate_series", "unnest":
					found = true
				}
			}
		}
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			switch {
			case fd.IsList() && fd.Message() != nil:
				for i := 0; i < v.List().Len(); i++ {
					walk(v.List().Get(i).Message())
				}
			case fd.Message() != nil && !fd.IsMap():
				walk(v.Message())
			}
			return !found
		})
	}
	for _, t := range targets {
		walk(t.ProtoReflect())
	}
	return found
}

// personRowSQL is statisticsSQL for a cohort extended by
// withPersonAttributes: one pass over the cohort gives the row and column
// totals and the persons by sex and age decade (after one aggregation per
// person unless the cohort is one row per person); studies per modality,
// when the cohort has accessions, are counted as in statisticsSQL. The
// result rows are statisticsSQL's.
func personRowSQL(pr personRow, s Shape) string {
	var b strings.Builder
	aliases := make([]string, s.All, s.All+2)
	for i := range aliases {
		aliases[i] = "x" + strconv.Itoa(i+1)
	}
	for _, c := range s.Columns {
		aliases[c.Index] = alias(c.Index)
	}
	aliases = append(aliases, sexColumn, birthColumn)
	fmt.Fprintf(&b, "WITH flip_cohort__(%s) AS NOT MATERIALIZED (\n%s\n)\n", strings.Join(aliases, ", "), pr.SQL)
	pid := alias(s.Columns[s.Person].Index)
	counts := make([]string, len(s.Columns))
	if pr.OnePerPerson {
		for i, c := range s.Columns {
			counts[i] = fmt.Sprintf("count(%s)", alias(c.Index))
		}
		fmt.Fprintf(&b, `SELECT true AS by_pid, %s::text AS sex, NULL::text AS modality, %s AS decade,
  count(%s)::bigint AS subjects, count(%s)::bigint AS found, 0::bigint AS studies, count(*)::bigint AS nrows,
  ARRAY[%s]::bigint[] AS counts
FROM flip_cohort__
GROUP BY 2, 4`, sexColumn, DecadeIndexExpr(birthColumn), pid, pid, strings.Join(counts, ", "))
	} else {
		// One row per person id (sex and birth date depend on it), then
		// per sex and decade.
		perPerson := make([]string, len(s.Columns))
		for i, c := range s.Columns {
			perPerson[i] = fmt.Sprintf("count(%s) AS k%d", alias(c.Index), i)
			counts[i] = fmt.Sprintf("sum(g.k%d)", i)
		}
		fmt.Fprintf(&b, `SELECT true AS by_pid, g.sex AS sex, NULL::text AS modality, %s AS decade,
  count(g.pid)::bigint AS subjects, count(g.pid)::bigint AS found, 0::bigint AS studies, sum(g.n)::bigint AS nrows,
  ARRAY[%s]::bigint[] AS counts
FROM (SELECT %s AS pid, min(%s::text COLLATE "C") AS sex, min(%s) AS birth, count(*) AS n, %s
      FROM flip_cohort__ GROUP BY %s) g
GROUP BY 2, 4`, DecadeIndexExpr("g.birth"), strings.Join(counts, ", "), pid, sexColumn, birthColumn,
			strings.Join(perPerson, ", "), pid)
	}
	if s.Accession >= 0 {
		b.WriteString(modalitySQL(alias(s.Columns[s.Accession].Index)))
	}
	return b.String()
}

// modalitySQL is the statistics' branch counting the studies of the cohort's
// accessions per modality.
func modalitySQL(acc string) string {
	return fmt.Sprintf(`
UNION ALL
SELECT false, NULL, COALESCE(c.concept_name, io.modality_concept_id::text)::text, NULL, 0, 0, count(*), 0, NULL
FROM omop.image_occurrence io LEFT JOIN omop.concept c ON c.concept_id = io.modality_concept_id
WHERE io.accession_id IN (SELECT %s::text FROM flip_cohort__)
GROUP BY 3`, acc)
}
