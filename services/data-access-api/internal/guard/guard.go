// Package guard is the SQL guard of data-access-api: the security authority
// that decides whether a researcher's cohort query may run against OMOP.
//
// A query is parsed with the PostgreSQL parser (libpg_query), walked once
// over every node of the parse tree and, when accepted, deparsed from the
// checked tree. Only that deparsed text is ever executed, and only after it
// has been parsed again and found to yield exactly the checked tree.
//
// The walk is an allowlist at every level: statement kinds, parse-tree node
// types, functions, table functions, cast target types and schemas. Anything
// not explicitly allowed is refused, including node types that a future
// parser version may add. Unqualified table references that are not common
// table expressions in scope are pinned to the omop schema in the tree, so
// the database never resolves them through pg_catalog or any other schema.
package guard

import (
	"fmt"
	"strings"
	"unicode/utf8"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// MaxQueryLength is the longest query, in characters, that Check accepts.
const MaxQueryLength = 10240

// omopSchema is the only schema a query may read from.
const omopSchema = "omop"

// Refusal texts that do not depend on the query. The wording follows FLIP's
// data-access-api where FLIP has one.
const (
	reasonTooLong      = "Query exceeds maximum length of 10240 characters."
	reasonOneStatement = "Exactly one SQL statement is allowed per request."
	reasonOnlySelect   = "Only SELECT statements are allowed."
	reasonDataModify   = "Data-modifying statements are not allowed."
	reasonLocking      = "Locking clauses (FOR UPDATE, FOR SHARE) are not allowed."
	reasonCrossDB      = "Cross-database table references are not allowed."
	reasonLimit        = "LIMIT must be a literal integer."
	reasonOffset       = "OFFSET must be a literal integer."
	reasonInternal     = "Could not validate query."
)

// Refusal is a query the guard refuses; Reason is the HTTP 400 detail (FLIP
// wording where FLIP has one).
type Refusal struct{ Reason string }

// Error returns the refusal reason.
func (r *Refusal) Error() string { return r.Reason }

func refuse(format string, args ...any) *Refusal {
	return &Refusal{Reason: fmt.Sprintf(format, args...)}
}

// Check validates sql and returns the SQL to execute, deparsed from the
// checked (rewritten) tree, without a trailing ';'. A non-nil error is always
// a *Refusal.
func Check(sql string) (out string, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = "", &Refusal{Reason: reasonInternal}
		}
	}()
	res, ref := check(sql)
	if ref != nil {
		return "", ref
	}
	return res, nil
}

// check applies the guard's rules in order and returns the first refusal.
func check(sql string) (string, *Refusal) {
	if len(sql) > MaxQueryLength && utf8.RuneCountInString(sql) > MaxQueryLength {
		return "", &Refusal{Reason: reasonTooLong}
	}
	// The parser reads a C string: a NUL would silently end the query early.
	if strings.IndexByte(sql, 0) >= 0 {
		return "", &Refusal{Reason: "Could not parse SQL query: query contains a NUL character"}
	}
	if !utf8.ValidString(sql) {
		return "", &Refusal{Reason: "Could not parse SQL query: query is not valid UTF-8"}
	}
	tree, err := pg_query.Parse(sql)
	if err != nil {
		return "", refuse("Could not parse SQL query: %s", strings.TrimSpace(err.Error()))
	}
	if len(tree.GetStmts()) != 1 {
		return "", &Refusal{Reason: reasonOneStatement}
	}
	// The parser drops empty statements, so "; SELECT 1" and "SELECT 1; ;"
	// parse to one statement; the token stream shows them.
	single, err := singleStatementTokens(sql)
	if err != nil {
		return "", refuse("Could not parse SQL query: %s", strings.TrimSpace(err.Error()))
	}
	if !single {
		return "", &Refusal{Reason: reasonOneStatement}
	}
	sel := tree.GetStmts()[0].GetStmt().GetSelectStmt()
	if sel == nil {
		return "", &Refusal{Reason: reasonOnlySelect}
	}
	var w walker
	w.walk(sel.ProtoReflect(), nil)
	if r := w.refusal(); r != nil {
		return "", r
	}
	out, err := pg_query.Deparse(tree)
	if err != nil {
		return "", &Refusal{Reason: reasonInternal}
	}
	out = strings.TrimSpace(out)
	out = strings.TrimSpace(strings.TrimSuffix(out, ";"))
	if out == "" || !parsesTo(out, tree) {
		return "", &Refusal{Reason: reasonInternal}
	}
	return out, nil
}

// parsesTo reports whether sql parses to exactly the checked tree, source
// positions aside. It guards against any case where the deparsed text would
// not mean what was checked.
func parsesTo(sql string, checked *pg_query.ParseResult) bool {
	again, err := pg_query.Parse(sql)
	if err != nil {
		return false
	}
	clearLocations(checked.ProtoReflect())
	clearLocations(again.ProtoReflect())
	return proto.Equal(checked, again)
}

// clearLocations zeroes every source position in a parse tree.
func clearLocations(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.Kind() == protoreflect.MessageKind && fd.IsList():
			l := v.List()
			for i := range l.Len() {
				clearLocations(l.Get(i).Message())
			}
		case fd.Kind() == protoreflect.MessageKind && !fd.IsMap():
			clearLocations(v.Message())
		case locationFields[fd.Name()]:
			m.Clear(fd)
		}
		return true
	})
}

// locationFields are the parse-tree fields that hold source positions.
var locationFields = map[protoreflect.Name]bool{"location": true, "stmt_location": true, "stmt_len": true}

// singleStatementTokens reports whether sql holds no ';' token, or exactly
// one as its last token (comments aside).
func singleStatementTokens(sql string) (bool, error) {
	scan, err := pg_query.Scan(sql)
	if err != nil {
		return false, err
	}
	semicolons := 0
	lastIsSemicolon := false
	for _, tok := range scan.GetTokens() {
		switch tok.GetToken() {
		case pg_query.Token_SQL_COMMENT, pg_query.Token_C_COMMENT:
			continue
		case pg_query.Token_ASCII_59:
			semicolons++
			lastIsSemicolon = true
		default:
			lastIsSemicolon = false
		}
	}
	return semicolons == 0 || (semicolons == 1 && lastIsSemicolon), nil
}
