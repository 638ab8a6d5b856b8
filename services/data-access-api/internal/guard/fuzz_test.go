package guard

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// FuzzCheck checks the guard's safety properties on arbitrary input: Check
// never panics; a refusal is a *Refusal with a reason; an accepted query's
// output is accepted again unchanged and, re-parsed and inspected by a walker
// independent of Check's own, is one SELECT whose tables are all omop tables
// or CTEs in scope and whose functions, casts and node types are allowlisted.
func FuzzCheck(f *testing.F) {
	for _, c := range acceptCases {
		f.Add(c.sql)
	}
	for _, c := range loadCorpus(f) {
		f.Add(c.SQL)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		out, err := Check(sql)
		if err != nil {
			var ref *Refusal
			if !errors.As(err, &ref) || ref.Reason == "" {
				t.Fatalf("Check(%q) error %v (%T) is not a *Refusal with a reason", sql, err, err)
			}
			if out != "" {
				t.Fatalf("Check(%q) returned SQL %q with a refusal", sql, out)
			}
			return
		}
		again, err := Check(out)
		if err != nil || again != out {
			t.Fatalf("not idempotent: Check(%q) = %q; Check of that = %q, %v", sql, out, again, err)
		}
		if err := verifyOutput(out); err != nil {
			t.Fatalf("Check(%q) = %q: %v", sql, out, err)
		}
	})
}

func TestVerifyOutputDetectsViolations(t *testing.T) {
	// The property checker itself must reject what the guard refuses.
	bad := []string{
		`SELECT 1; SELECT 2`,
		`INSERT INTO omop.person (person_id) VALUES (1)`,
		`SELECT * FROM person`,
		`SELECT * FROM pg_catalog.pg_class`,
		`SELECT * FROM a.omop.person`,
		`WITH w AS (WITH c AS (SELECT 1) SELECT * FROM c) SELECT * FROM c`,
		`WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a`,
		`SELECT pg_sleep(1)`,
		`SELECT omop.lower('x')`,
		`SELECT 'x'::regclass`,
		`SELECT current_user`,
		`SELECT $1`,
		`SELECT 1 FROM omop.person FOR UPDATE`,
		`SELECT 1 INTO t`,
		`SELECT 1 LIMIT (SELECT 1)`,
		`SELECT 1 OFFSET 1 + 1`,
	}
	for _, sql := range bad {
		if err := verifyOutput(sql); err == nil {
			t.Errorf("verifyOutput(%q) found no violation", sql)
		}
	}
	good := []string{
		`SELECT * FROM omop.person`,
		`WITH c AS (SELECT 1) SELECT * FROM c UNION SELECT * FROM (SELECT * FROM c) s`,
		`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n LIMIT 5`,
		`SELECT pg_catalog.lower('x')::text, current_date FROM omop.person LIMIT ALL`,
	}
	for _, sql := range good {
		if err := verifyOutput(sql); err != nil {
			t.Errorf("verifyOutput(%q): %v", sql, err)
		}
	}
}

// verifyOutput re-parses sql to JSON and checks it, without Check's walker.
func verifyOutput(sql string) error {
	text, err := pg_query.ParseToJSON(sql)
	if err != nil {
		return fmt.Errorf("output does not parse: %w", err)
	}
	var doc struct {
		Stmts []struct {
			Stmt map[string]any `json:"stmt"`
		} `json:"stmts"`
	}
	if err := json.Unmarshal([]byte(text), &doc); err != nil {
		return fmt.Errorf("decode parse tree: %w", err)
	}
	if len(doc.Stmts) != 1 {
		return fmt.Errorf("%d statements, want 1", len(doc.Stmts))
	}
	if _, ok := doc.Stmts[0].Stmt["SelectStmt"]; !ok || len(doc.Stmts[0].Stmt) != 1 {
		return fmt.Errorf("statement is not a SELECT")
	}
	var v jsonVerifier
	v.value(doc.Stmts[0].Stmt, nil)
	if len(v.problems) > 0 {
		return errors.New(strings.Join(v.problems, "; "))
	}
	return nil
}

// jsonVerifier walks pg_query's JSON parse tree. A JSON object with a single
// key that starts with an upper-case letter is a node of that type; other
// objects are plain messages whose fields are walked.
type jsonVerifier struct{ problems []string }

func (v *jsonVerifier) fail(format string, args ...any) {
	v.problems = append(v.problems, fmt.Sprintf(format, args...))
}

func (v *jsonVerifier) value(x any, ctes []string) {
	switch x := x.(type) {
	case []any:
		for _, e := range x {
			v.value(e, ctes)
		}
	case map[string]any:
		if len(x) == 1 {
			for k, body := range x {
				if k != "" && k[0] >= 'A' && k[0] <= 'Z' {
					v.node(k, obj(body), ctes)
					return
				}
			}
		}
		for _, e := range x {
			v.value(e, ctes)
		}
	}
}

func (v *jsonVerifier) node(kind string, body map[string]any, ctes []string) {
	if !allowedNodes[protoreflect.Name(kind)] {
		v.fail("node type %s", kind)
	}
	switch kind {
	case "SelectStmt":
		v.selectStmt(body, ctes)
		return
	case "RangeVar":
		schema, qualified := body["schemaname"].(string)
		rel, _ := body["relname"].(string)
		switch {
		case body["catalogname"] != nil:
			v.fail("table %v.%s.%s has a database", body["catalogname"], schema, rel)
		case qualified && schema != omopSchema:
			v.fail("table %s.%s outside omop", schema, rel)
		case !qualified && !slices.Contains(ctes, rel):
			v.fail("unqualified table %s is not a CTE in scope", rel)
		}
	case "FuncCall":
		if name, ok := builtinName(body["funcname"]); !ok || !allowedFunctions[name] {
			v.fail("function %v", body["funcname"])
		}
	case "TypeCast":
		names := obj(body["typeName"])["names"]
		if name, ok := builtinName(names); !ok || !allowedTypes[name] {
			v.fail("cast to %v", names)
		}
	case "SQLValueFunction":
		op, _ := body["op"].(string)
		if !allowedSQLValueFunctions[pg_query.SQLValueFunctionOp(pg_query.SQLValueFunctionOp_value[op])] {
			v.fail("SQL value function %s", op)
		}
	}
	v.value(body, ctes)
}

func (v *jsonVerifier) selectStmt(body map[string]any, ctes []string) {
	if body["intoClause"] != nil {
		v.fail("SELECT INTO")
	}
	for _, key := range []string{"limitCount", "limitOffset"} {
		if lim, ok := body[key]; ok && !jsonLiteralCount(lim) {
			v.fail("%s is not an integer literal", key)
		}
	}
	inner := ctes
	if wc, ok := body["withClause"].(map[string]any); ok {
		list, _ := wc["ctes"].([]any)
		var names []string
		for _, c := range list {
			name, _ := obj(obj(c)["CommonTableExpr"])["ctename"].(string)
			names = append(names, name)
		}
		recursive, _ := wc["recursive"].(bool)
		for i, c := range list {
			visible := slices.Concat(ctes, names[:i])
			if recursive {
				visible = slices.Concat(ctes, names)
			}
			v.value(c, visible)
		}
		inner = slices.Concat(ctes, names)
	}
	for k, e := range body {
		switch k {
		case "withClause":
		case "larg", "rarg": // set-operation arms are SelectStmt fields, not nodes
			v.selectStmt(obj(e), inner)
		default:
			v.value(e, inner)
		}
	}
}

// builtinName returns the last part of a JSON name list that is unqualified
// or qualified with pg_catalog.
func builtinName(x any) (string, bool) {
	list, _ := x.([]any)
	var parts []string
	for _, e := range list {
		s, ok := obj(obj(e)["String"])["sval"].(string)
		if !ok {
			return "", false
		}
		parts = append(parts, s)
	}
	switch {
	case len(parts) == 1:
		return parts[0], true
	case len(parts) == 2 && parts[0] == "pg_catalog":
		return parts[1], true
	}
	return "", false
}

// jsonLiteralCount reports whether a LIMIT or OFFSET value is NULL/ALL or a
// non-negative integer constant.
func jsonLiteralCount(x any) bool {
	c := obj(obj(x)["A_Const"])
	if c == nil {
		return false
	}
	if c["isnull"] == true {
		return true
	}
	if iv, ok := c["ival"].(map[string]any); ok {
		n, _ := iv["ival"].(float64) // absent means 0
		return n >= 0
	}
	if fv, ok := c["fval"].(map[string]any); ok {
		s, _ := fv["fval"].(string)
		return s != "" && strings.Trim(s, "0123456789") == ""
	}
	return false
}

// obj returns x as a JSON object, or nil.
func obj(x any) map[string]any {
	m, _ := x.(map[string]any)
	return m
}
