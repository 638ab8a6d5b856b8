package guard

import (
	"errors"
	"strings"
	"testing"
)

// acceptCase is a query the guard accepts. want are fragments the output must
// contain, notWant fragments it must not. undefinedTable marks queries whose
// pinned output names a table that omop lacks, so the database must answer
// undefined_table (42P01).
type acceptCase struct {
	name           string
	sql            string
	want           []string
	notWant        []string
	exact          string
	undefinedTable bool
}

var acceptCases = []acceptCase{
	{name: "plain table pinned", sql: `SELECT * FROM person`, exact: `SELECT * FROM omop.person`},
	{name: "trailing semicolon", sql: `SELECT person_id FROM person;`, exact: `SELECT person_id FROM omop.person`},
	{name: "trailing semicolon then comment", sql: "SELECT 1 AS one; -- done\n", exact: `SELECT 1 AS one`},
	{name: "comments around", sql: "/* leading */ SELECT person_id -- why\nFROM person /* trailing */", exact: `SELECT person_id FROM omop.person`},
	{name: "omop qualified kept", sql: `SELECT * FROM omop.person`, exact: `SELECT * FROM omop.person`},
	{name: "quoted omop qualified kept", sql: `SELECT * FROM "omop"."person"`, exact: `SELECT * FROM omop.person`},
	{name: "table statement", sql: `TABLE person`, exact: `SELECT * FROM omop.person`},
	{
		name: "joins pinned",
		sql: `SELECT p.person_id FROM person p LEFT JOIN death d USING (person_id)
			JOIN visit_occurrence v ON v.person_id = p.person_id CROSS JOIN concept c`,
		want: []string{"FROM omop.person p", "JOIN omop.visit_occurrence v", "JOIN omop.death d", "JOIN omop.concept c"},
	},
	{
		name: "subqueries pinned",
		sql: `SELECT * FROM (SELECT person_id FROM visit_occurrence) s
			WHERE s.person_id IN (SELECT person_id FROM condition_occurrence WHERE condition_concept_id IN (1, 2, 3))
			AND (SELECT count(*) FROM drug_exposure) >= 0`,
		want: []string{"FROM omop.visit_occurrence", "FROM omop.condition_occurrence", "FROM omop.drug_exposure"},
	},
	{
		name: "set operation arms pinned",
		sql: `SELECT person_id FROM person UNION SELECT person_id FROM death
			INTERSECT SELECT person_id FROM measurement EXCEPT SELECT person_id FROM observation_period`,
		want: []string{"FROM omop.person", "FROM omop.death", "FROM omop.measurement", "FROM omop.observation_period"},
	},
	{
		name: "cte name kept",
		sql:  `WITH cohort_rows AS (SELECT person_id FROM person) SELECT * FROM cohort_rows`,
		want: []string{"FROM omop.person", "SELECT * FROM cohort_rows"}, notWant: []string{"omop.cohort_rows"},
	},
	{
		name: "cte body pinned", sql: `WITH p AS (SELECT * FROM pg_class) SELECT * FROM p`,
		want: []string{"(SELECT * FROM omop.pg_class)", "SELECT * FROM p"}, undefinedTable: true,
	},
	{
		name: "inner cte cannot exempt outer reference",
		sql:  `WITH wrapper AS (WITH audit_log AS (SELECT 1 AS x) SELECT * FROM audit_log) SELECT * FROM audit_log`,
		want: []string{"SELECT * FROM audit_log) SELECT * FROM omop.audit_log"}, undefinedTable: true,
	},
	{
		name: "cte shadowing a catalog name stays a cte",
		sql:  `WITH pg_class AS (SELECT 1 AS x) SELECT * FROM pg_class`,
		want: []string{"SELECT * FROM pg_class"}, notWant: []string{"omop.pg_class"},
	},
	{
		name: "quoted cte does not exempt unquoted reference",
		sql:  `WITH "PG_CLASS" AS (SELECT 1 AS x) SELECT * FROM PG_CLASS`,
		want: []string{`WITH "PG_CLASS" AS`, "SELECT * FROM omop.pg_class"}, undefinedTable: true,
	},
	{
		name: "unquoted cte matches case-insensitively",
		sql:  `WITH cohort AS (SELECT 1 AS x) SELECT * FROM COHORT`,
		want: []string{"SELECT * FROM cohort"}, notWant: []string{"omop.cohort"},
	},
	{
		name: "cte inside a derived table does not exempt outer table",
		sql:  `SELECT * FROM person, (WITH person AS (SELECT 1 AS x) SELECT * FROM person) z`,
		want: []string{"SELECT * FROM omop.person, (WITH person AS (SELECT 1 AS x) SELECT * FROM person) z"},
	},
	{
		name: "later cte sees earlier cte",
		sql:  `WITH a AS (SELECT person_id FROM person), b AS (SELECT * FROM a) SELECT * FROM b`,
		want: []string{"FROM omop.person", "b AS (SELECT * FROM a)", "SELECT * FROM b"},
	},
	{
		name: "earlier cte does not see later cte",
		sql:  `WITH a AS (SELECT * FROM b), b AS (SELECT 1 AS x) SELECT * FROM a`,
		want: []string{"a AS (SELECT * FROM omop.b)"}, undefinedTable: true,
	},
	{
		name: "cte does not see itself without recursive",
		sql:  `WITH a AS (SELECT * FROM a) SELECT * FROM a`,
		want: []string{"a AS (SELECT * FROM omop.a) SELECT * FROM a"}, undefinedTable: true,
	},
	{
		name: "recursive cte sees itself",
		sql:  `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5) SELECT * FROM n`,
		want: []string{"FROM n WHERE i < 5", "SELECT * FROM n"}, notWant: []string{"omop.n"},
	},
	{
		name: "cte visible in sublinks and union arms",
		sql: `WITH c AS (SELECT person_id FROM person)
			SELECT person_id FROM death d WHERE EXISTS (SELECT 1 FROM c WHERE c.person_id = d.person_id)
			UNION ALL SELECT person_id FROM c`,
		want: []string{"FROM omop.death d", "EXISTS (SELECT 1 FROM c WHERE", "UNION ALL SELECT person_id FROM c"},
	},
	{
		name: "with on a parenthesised arm stays in that arm",
		sql:  `(WITH c AS (SELECT 1 AS x) SELECT x FROM c) UNION ALL SELECT x FROM c`,
		want: []string{"SELECT x FROM c)", "UNION ALL SELECT x FROM omop.c"}, undefinedTable: true,
	},
	{
		name: "catalog table pinned", sql: `SELECT relname FROM pg_class`,
		exact: `SELECT relname FROM omop.pg_class`, undefinedTable: true,
	},
	{
		name: "quoted table name pinned", sql: `SELECT * FROM "Person"`,
		exact: `SELECT * FROM omop."Person"`, undefinedTable: true,
	},
	{
		name: "age of current date",
		sql:  `SELECT age(CURRENT_DATE, p.birth_datetime) FROM person p`,
		want: []string{"age(current_date, p.birth_datetime)", "FROM omop.person p"},
	},
	{
		name: "lateral generate_series",
		sql:  `SELECT p.person_id, g FROM person p, LATERAL generate_series(1, 3) g`,
		want: []string{"LATERAL generate_series(1, 3) g"},
	},
	{
		name: "table functions",
		sql: `SELECT * FROM unnest(ARRAY[1, 2, 3]) WITH ORDINALITY AS u(x, n),
			pg_catalog.generate_series(1, 2) AS s, ROWS FROM (generate_series(1, 2), unnest(ARRAY['a'])) AS r(a, b)`,
		want: []string{"unnest(ARRAY[1, 2, 3]) WITH ORDINALITY u(x, n)", "ROWS FROM (generate_series(1, 2)"},
	},
	{
		name: "count filter",
		sql:  `SELECT count(*) FILTER (WHERE gender_concept_id = 8507) AS male FROM person`,
		want: []string{"count(*) FILTER (WHERE gender_concept_id = 8507) AS male"},
	},
	{
		name: "window functions",
		sql: `SELECT person_id, row_number() OVER (PARTITION BY person_id ORDER BY visit_start_date DESC) AS rn,
			lag(visit_start_date) OVER w, dense_rank() OVER w, ntile(4) OVER w,
			sum(visit_concept_id) OVER (ORDER BY visit_start_date ROWS BETWEEN 2 PRECEDING AND CURRENT ROW)
			FROM visit_occurrence WINDOW w AS (ORDER BY visit_start_date)`,
		want: []string{"row_number() OVER (PARTITION BY person_id ORDER BY visit_start_date DESC)", "WINDOW w AS"},
	},
	{
		name: "case expression",
		sql:  `SELECT CASE WHEN year_of_birth < 1950 THEN 'old' WHEN year_of_birth IS NULL THEN NULL ELSE 'young' END AS band FROM person`,
		want: []string{"CASE WHEN year_of_birth < 1950 THEN 'old'"},
	},
	{
		name: "extract and date functions",
		sql: `SELECT EXTRACT(YEAR FROM visit_start_date), date_part('month', visit_start_date),
			date_trunc('month', visit_start_datetime), to_char(visit_start_date, 'YYYY-MM'),
			make_date(2020, 1, 1), now() - visit_start_datetime, justify_days(INTERVAL '40 days'),
			visit_start_datetime AT TIME ZONE 'UTC'
			FROM visit_occurrence`,
		want: []string{"FROM visit_start_date)", "date_trunc('month', visit_start_datetime)", "AT TIME ZONE 'UTC'"},
	},
	{
		name: "date arithmetic",
		sql: `SELECT visit_end_date - visit_start_date, visit_start_date + INTERVAL '30 days',
			CURRENT_DATE - 365, CURRENT_TIMESTAMP, LOCALTIMESTAMP FROM visit_occurrence
			WHERE visit_start_date >= DATE '2020-01-01'`,
		want: []string{"visit_end_date - visit_start_date", "'2020-01-01'::date"},
	},
	{
		name: "predicates",
		sql: `SELECT person_id FROM person WHERE gender_concept_id IN (8507, 8532) AND year_of_birth BETWEEN 1950 AND 2000
			AND person_source_value LIKE 'A%' AND gender_source_value ILIKE 'm%' AND race_source_value NOT LIKE '%x'
			AND ethnicity_source_value SIMILAR TO '(a|b)%' AND location_id IS NULL AND provider_id IS DISTINCT FROM 1
			AND EXISTS (SELECT 1 FROM death d WHERE d.person_id = person.person_id)
			AND NOT EXISTS (SELECT 1 FROM cohort) AND person_id = ANY (ARRAY[1, 2]) AND (year_of_birth > 0) IS TRUE`,
		want: []string{"IN (8507, 8532)", "BETWEEN 1950 AND 2000", "LIKE 'A%'", "ILIKE 'm%'", "FROM omop.death d", "FROM omop.cohort"},
	},
	{
		name: "casts",
		sql: `SELECT visit_start_datetime::date, CAST(person_id AS text), person_id::bigint, '2020-01-01'::timestamp,
			ARRAY[1, 2]::int[], '1.5'::numeric(10, 2), '1'::double precision, 'x'::varchar(3), true::boolean,
			'12:00'::time, '2020-01-01'::timestamptz, '1 day'::interval, 1::smallint, 1::real, 'a'::char(1)
			FROM visit_occurrence`,
		want: []string{"visit_start_datetime::date", "person_id::text", "ARRAY[1, 2]::int[]"},
	},
	{
		name: "aggregates with grouping",
		sql: `SELECT gender_concept_id, count(DISTINCT person_id), avg(year_of_birth), min(year_of_birth),
			max(year_of_birth), stddev(year_of_birth), percentile_cont(0.5) WITHIN GROUP (ORDER BY year_of_birth),
			string_agg(person_source_value, ',' ORDER BY person_id), array_agg(person_id), bool_or(location_id IS NULL)
			FROM person GROUP BY gender_concept_id HAVING count(*) > 10 ORDER BY 2 DESC NULLS LAST LIMIT 10 OFFSET 5`,
		want: []string{"count(DISTINCT person_id)", "WITHIN GROUP (ORDER BY year_of_birth)", "LIMIT 10 OFFSET 5"},
	},
	{
		name: "grouping sets",
		sql:  `SELECT gender_concept_id, race_concept_id, GROUPING(gender_concept_id), count(*) FROM person GROUP BY ROLLUP (gender_concept_id, race_concept_id)`,
		want: []string{"GROUPING(gender_concept_id)", "ROLLUP (gender_concept_id, race_concept_id)"},
	},
	{
		name: "conditional expressions",
		sql: `SELECT COALESCE(month_of_birth, 1), NULLIF(day_of_birth, 0), GREATEST(year_of_birth, 1900),
			LEAST(year_of_birth, 2100), ROW(1, 2) IS NOT NULL, (ARRAY[1, 2, 3])[1] FROM person`,
		want: []string{"COALESCE(month_of_birth, 1)", "NULLIF(day_of_birth, 0)", "GREATEST(year_of_birth, 1900)"},
	},
	{
		name: "string functions",
		sql: `SELECT lower(person_source_value), upper('a'), length('abc'), substring(person_source_value FROM 1 FOR 3),
			substr('abc', 2), trim(BOTH ' ' FROM person_source_value), position('a' IN 'cba'), concat_ws('-', 'a', 'b'),
			replace('a', 'a', 'b'), left('abc', 1), lpad('1', 3, '0'), split_part('a,b', ',', 1), initcap('ab'),
			'a' || 'b', pg_catalog.lower('X') FROM person`,
		want: []string{"lower(person_source_value)", "'a' || 'b'", "pg_catalog.lower('X')"},
	},
	{
		name: "math functions",
		sql:  `SELECT abs(-1), round(1.5), round(2.345, 2), floor(1.5), ceil(1.2), power(2, 3), sqrt(4), ln(2), log(10), mod(5, 2), div(5, 2), width_bucket(5, 0, 10, 5), 7 % 3`,
		want: []string{"round(2.345, 2)", "width_bucket(5, 0, 10, 5)"},
	},
	{
		name: "values list", sql: `VALUES (1, 'a'), (2, 'b')`, exact: `VALUES (1, 'a'), (2, 'b')`,
	},
	{
		name: "distinct on and limits",
		sql:  `SELECT DISTINCT ON (person_id) person_id, visit_start_date FROM visit_occurrence ORDER BY person_id, visit_start_date LIMIT ALL`,
		want: []string{"DISTINCT ON (person_id)", "FROM omop.visit_occurrence"},
	},
	{
		name: "fetch first", sql: `SELECT person_id FROM person ORDER BY person_id FETCH FIRST 5 ROWS ONLY`,
		want: []string{"FROM omop.person"},
	},
	{
		name: "big literal limit", sql: `SELECT person_id FROM person LIMIT 10000000000`,
		exact: `SELECT person_id FROM omop.person LIMIT 10000000000`,
	},
	{
		name: "literals with statement-like content",
		sql:  `SELECT 'a;b' AS s1, $$x; -- y$$ AS s2, E'\n;' AS s3, 'it''s' AS s4, '/* no */' AS s5`,
		want: []string{"'a;b'", "'x; -- y'", "'it''s'"},
	},
	{
		name: "imaging cohort",
		sql: `SELECT io.person_id, io.accession_id, c.concept_code AS modality FROM image_occurrence io
			JOIN procedure_occurrence po ON po.procedure_occurrence_id = io.procedure_occurrence_id
			LEFT JOIN concept c ON c.concept_id = io.modality_concept_id WHERE io.image_occurrence_date > CURRENT_DATE - INTERVAL '5 years'`,
		want: []string{"FROM omop.image_occurrence io", "JOIN omop.procedure_occurrence po", "JOIN omop.concept c"},
	},
	{
		name: "qualified catalog operator", sql: `SELECT 1 OPERATOR(pg_catalog.+) 1 AS two`,
		want: []string{"OPERATOR(pg_catalog.+)"},
	},
}

func TestCheckAccepts(t *testing.T) {
	for _, c := range acceptCases {
		t.Run(c.name, func(t *testing.T) {
			out, err := Check(c.sql)
			if err != nil {
				t.Fatalf("Check(%q) refused: %v", c.sql, err)
			}
			if c.exact != "" && out != c.exact {
				t.Errorf("Check(%q) = %q, want %q", c.sql, out, c.exact)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("Check(%q) = %q, want it to contain %q", c.sql, out, w)
				}
			}
			for _, w := range c.notWant {
				if strings.Contains(out, w) {
					t.Errorf("Check(%q) = %q, want it not to contain %q", c.sql, out, w)
				}
			}
			if strings.HasSuffix(out, ";") {
				t.Errorf("Check(%q) = %q ends with ';'", c.sql, out)
			}
			again, err := Check(out)
			if err != nil || again != out {
				t.Errorf("Check(Check(%q)) = %q, %v; want %q", c.sql, again, err, out)
			}
		})
	}
}

func TestCheckInnerCTECannotExemptOuterReference(t *testing.T) {
	out, err := Check(`WITH wrapper AS (WITH audit_log AS (SELECT 1) SELECT * FROM audit_log) SELECT * FROM audit_log`)
	if err != nil {
		t.Fatal(err)
	}
	if want := "SELECT * FROM omop.audit_log"; !strings.HasSuffix(out, want) {
		t.Errorf("output %q does not end with %q", out, want)
	}
}

func TestCheckRefuses(t *testing.T) {
	const (
		oneStatement = "Exactly one SQL statement is allowed per request."
		onlySelect   = "Only SELECT statements are allowed."
		dataModify   = "Data-modifying statements are not allowed."
		locking      = "Locking clauses (FOR UPDATE, FOR SHARE) are not allowed."
		crossDB      = "Cross-database table references are not allowed."
		tableFn      = " is not an allowed table-valued function. Allowed: generate_series, unnest."
	)
	cases := []struct{ name, sql, reason string }{
		{"over length", "SELECT 1" + strings.Repeat(" ", MaxQueryLength), "Query exceeds maximum length of 10240 characters."},
		{"parse error", "SELECT FROM WHERE", `Could not parse SQL query: syntax error at or near "WHERE"`},
		{"junk", "INVALID SQL", `Could not parse SQL query: syntax error at or near "INVALID"`},
		{"nul byte", "SELECT 1\x00; DROP TABLE person", "Could not parse SQL query: query contains a NUL character"},
		{"invalid utf-8", "SELECT '\xff'", "Could not parse SQL query: query is not valid UTF-8"},

		{"empty", "", oneStatement},
		{"whitespace", " \n\t ", oneStatement},
		{"comment only", "-- nothing", oneStatement},
		{"semicolons only", "; ;", oneStatement},
		{"two selects", "SELECT 1; SELECT 2", oneStatement},
		{"empty statement after", "SELECT 1; ;", oneStatement},
		{"empty statement before", "; SELECT 1", oneStatement},
		{"hidden after comment", "SELECT 1 /* ; */; DROP TABLE person", oneStatement},

		{"insert", "INSERT INTO person (person_id) VALUES (1)", onlySelect},
		{"update", "UPDATE person SET year_of_birth = 1", onlySelect},
		{"delete", "DELETE FROM person", onlySelect},
		{"merge", "MERGE INTO person p USING death d ON p.person_id = d.person_id WHEN MATCHED THEN DELETE", onlySelect},
		{"drop", "DROP TABLE person", onlySelect},
		{"create table as", "CREATE TABLE x AS SELECT 1", onlySelect},
		{"copy", "COPY person TO STDOUT", onlySelect},
		{"explain", "EXPLAIN SELECT 1", onlySelect},
		{"set", "SET search_path = pg_catalog", onlySelect},
		{"call", "CALL p()", onlySelect},
		{"do", "DO $$ BEGIN END $$", onlySelect},
		{"lock", "LOCK TABLE person", onlySelect},

		{"select into", "SELECT * INTO stolen FROM person", dataModify},
		{"writable cte", "WITH x AS (DELETE FROM person RETURNING *) SELECT * FROM x", dataModify},
		{"nested writable cte", "SELECT * FROM (WITH x AS (INSERT INTO person (person_id) VALUES (1) RETURNING 1) SELECT * FROM x) s", dataModify},
		{"writable cte wins over schema", "WITH x AS (UPDATE person SET year_of_birth = 1 RETURNING 1) SELECT * FROM pg_catalog.pg_class", dataModify},

		{"for update", "SELECT * FROM person FOR UPDATE", locking},
		{"for key share in subquery", "SELECT * FROM (SELECT * FROM person FOR KEY SHARE) s", locking},

		{"cross database", "SELECT * FROM db.omop.person", crossDB},
		{"pg_catalog schema", "SELECT * FROM pg_catalog.pg_class", "Schema 'pg_catalog' is not accessible. Only the 'omop' schema is allowed."},
		{"upper case quoted schema", `SELECT * FROM "OMOP".person`, "Schema 'OMOP' is not accessible. Only the 'omop' schema is allowed."},
		{"unicode escaped schema", `SELECT * FROM U&"\0070g_catalog".pg_authid`, "Schema 'pg_catalog' is not accessible. Only the 'omop' schema is allowed."},
		{"schema in cte", "WITH r AS (SELECT * FROM information_schema.tables) SELECT * FROM r", "Schema 'information_schema' is not accessible. Only the 'omop' schema is allowed."},

		{"table function", "SELECT * FROM pg_ls_dir('/')", "'pg_ls_dir'" + tableFn},
		{"lateral table function", "SELECT * FROM person, LATERAL query_to_xml('SELECT 1', true, true, '') x", "'query_to_xml'" + tableFn},
		{"omop qualified table function", "SELECT * FROM omop.generate_series(1, 2)", "'omop.generate_series'" + tableFn},
		{"rows from table function", "SELECT * FROM ROWS FROM (generate_series(1, 2), pg_show_all_settings()) r", "'pg_show_all_settings'" + tableFn},

		{"pg_sleep", "SELECT pg_sleep(1)", "'pg_sleep' is not an allowed function."},
		{"qualified pg_read_file", "SELECT pg_catalog.pg_read_file('/etc/passwd')", "'pg_read_file' is not an allowed function."},
		{"upper case function", "SELECT PG_READ_FILE('x')", "'pg_read_file' is not an allowed function."},
		{"quoted upper case function", `SELECT "COUNT"(*) FROM person`, "'COUNT' is not an allowed function."},
		{"omop qualified function", "SELECT omop.lower('x')", "'omop.lower' is not an allowed function."},
		{"function in where", "SELECT 1 FROM person WHERE current_setting('x') IS NULL", "'current_setting' is not an allowed function."},
		{"version", "SELECT version()", "'version' is not an allowed function."},
		{"current_user", "SELECT current_user", "'current_user' is not an allowed function."},
		{"session_user", "SELECT session_user", "'session_user' is not an allowed function."},
		{"current_schema", "SELECT current_schema", "'current_schema' is not an allowed function."},
		{"qualified operator", "SELECT 1 OPERATOR(public.+) 1", "Operator 'public.+' is not allowed."},

		{"regclass cast", "SELECT 'pg_authid'::regclass", "Cast to 'regclass' is not allowed."},
		{"regproc cast", "SELECT CAST('pg_sleep' AS regproc)", "Cast to 'regproc' is not allowed."},
		{"xml cast", "SELECT '<a/>'::xml", "Cast to 'xml' is not allowed."},
		{"regclass array cast", "SELECT ARRAY['x']::pg_catalog.regclass[]", "Cast to 'regclass' is not allowed."},

		{"limit subquery", "SELECT * FROM person LIMIT (SELECT 1)", "LIMIT must be a literal integer."},
		{"limit case", "SELECT * FROM person LIMIT CASE WHEN true THEN 1 ELSE 0 END", "LIMIT must be a literal integer."},
		{"limit string", "SELECT * FROM person LIMIT '1'", "LIMIT must be a literal integer."},
		{"offset expression", "SELECT * FROM person OFFSET 1 + 1", "OFFSET must be a literal integer."},
		{"limit in subquery", "SELECT * FROM (SELECT * FROM person LIMIT (SELECT 1)) s", "LIMIT must be a literal integer."},

		{"parameter", "SELECT * FROM person WHERE person_id = $1", "Unsupported SQL construct: ParamRef."},
		{"xml element", "SELECT xmlelement(name a)", "Unsupported SQL construct: XmlExpr."},
		{"xmltable", "SELECT * FROM XMLTABLE('/a' PASSING '<a/>' COLUMNS x text PATH '.')", "Unsupported SQL construct: RangeTableFunc."},
		{"tablesample", "SELECT * FROM person TABLESAMPLE BERNOULLI (10)", "Unsupported SQL construct: RangeTableSample."},
		{"json constructor", "SELECT JSON_OBJECT('a' VALUE 1)", "Unsupported SQL construct: JsonObjectConstructor."},

		// The deparser writes this bit string as an E'' literal that parses to
		// a different tree; the guard fails closed rather than run it.
		{"deparse mismatch", `SELECT B'\0'`, "Could not validate query."},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := Check(c.sql)
			var ref *Refusal
			if !errors.As(err, &ref) {
				t.Fatalf("Check(%q) = %q, %v; want refusal %q", c.sql, out, err, c.reason)
			}
			if ref.Reason != c.reason {
				t.Errorf("Check(%q) reason = %q, want %q", c.sql, ref.Reason, c.reason)
			}
			if ref.Error() != ref.Reason {
				t.Errorf("Error() = %q, want %q", ref.Error(), ref.Reason)
			}
			if out != "" {
				t.Errorf("Check(%q) returned SQL %q with a refusal", c.sql, out)
			}
		})
	}
}

func TestCheckLengthCountsCharacters(t *testing.T) {
	prefix, suffix := "SELECT '", "'"
	fill := MaxQueryLength - len(prefix) - len(suffix)
	ascii := prefix + strings.Repeat("a", fill) + suffix
	if _, err := Check(ascii); err != nil {
		t.Errorf("query of exactly %d characters refused: %v", MaxQueryLength, err)
	}
	multi := prefix + strings.Repeat("é", fill) + suffix // more bytes, same characters
	if _, err := Check(multi); err != nil {
		t.Errorf("query of %d characters (%d bytes) refused: %v", MaxQueryLength, len(multi), err)
	}
	_, err := Check(prefix + strings.Repeat("é", fill+1) + suffix)
	var ref *Refusal
	if !errors.As(err, &ref) || ref.Reason != "Query exceeds maximum length of 10240 characters." {
		t.Errorf("query of %d characters: got %v, want the length refusal", MaxQueryLength+1, err)
	}
}

func BenchmarkCheck(b *testing.B) {
	const sql = `WITH c AS (SELECT p.person_id, age(CURRENT_DATE, p.birth_datetime) AS a FROM person p
		JOIN condition_occurrence co ON co.person_id = p.person_id WHERE co.condition_concept_id IN (1, 2, 3))
		SELECT io.person_id, io.accession_id, count(*) FILTER (WHERE c.a > INTERVAL '50 years')
		FROM image_occurrence io JOIN c ON c.person_id = io.person_id GROUP BY 1, 2 LIMIT 100`
	for b.Loop() {
		if _, err := Check(sql); err != nil {
			b.Fatal(err)
		}
	}
}
