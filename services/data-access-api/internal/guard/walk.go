package guard

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// rule orders the walker's refusals: when a query breaks several rules, the
// refusal of the earliest rule is reported, wherever in the tree it was found.
type rule int

const (
	ruleDataModify rule = iota
	ruleLocking
	ruleSchema
	ruleTableFunction
	ruleFunction
	ruleCast
	ruleLimit
	ruleNode
	numRules
)

// scope is the set of common table expression names visible at a point of
// the query, as a chain from the innermost WITH outwards.
type scope struct {
	name   string
	parent *scope
}

func (s *scope) with(name string) *scope { return &scope{name: name, parent: s} }

func (s *scope) visible(name string) bool {
	for ; s != nil; s = s.parent {
		if s.name == name {
			return true
		}
	}
	return false
}

// walker visits every node of a parse tree once, pins table references to
// the omop schema in place and records the first refusal of each rule.
type walker struct {
	first [numRules]*Refusal
}

func (w *walker) refuse(r rule, reason *Refusal) {
	if w.first[r] == nil {
		w.first[r] = reason
	}
}

// refusal returns the refusal of the earliest broken rule, or nil.
func (w *walker) refusal() *Refusal {
	for _, r := range w.first {
		if r != nil {
			return r
		}
	}
	return nil
}

var (
	nodeOneof        = (&pg_query.Node{}).ProtoReflect().Descriptor().Oneofs().ByName("node")
	selectWithClause = (&pg_query.SelectStmt{}).ProtoReflect().Descriptor().Fields().ByName("with_clause")
)

// walk checks the message m and everything below it, in scope sc.
func (w *walker) walk(m protoreflect.Message, sc *scope) {
	if !m.IsValid() {
		return
	}
	switch n := m.Interface().(type) {
	case *pg_query.Node:
		// A Node wraps exactly one concrete node; an empty one is the
		// parser's placeholder (for example plain SELECT DISTINCT).
		if fd := m.WhichOneof(nodeOneof); fd != nil {
			w.walk(m.Get(fd).Message(), sc)
		}
		return
	case *pg_query.SelectStmt:
		w.selectStmt(n, m, sc)
		return
	case *pg_query.InsertStmt, *pg_query.UpdateStmt, *pg_query.DeleteStmt, *pg_query.MergeStmt, *pg_query.IntoClause:
		w.refuse(ruleDataModify, &Refusal{Reason: reasonDataModify})
	case *pg_query.LockingClause:
		w.refuse(ruleLocking, &Refusal{Reason: reasonLocking})
	case *pg_query.RangeVar:
		w.rangeVar(n, sc)
	case *pg_query.RangeFunction:
		w.rangeFunction(n)
	case *pg_query.FuncCall:
		if name, ok := qualifiedName(n.GetFuncname(), allowedFunctions); !ok {
			w.refuse(ruleFunction, refuse("'%s' is not an allowed function.", name))
		}
	case *pg_query.SQLValueFunction:
		if !allowedSQLValueFunctions[n.GetOp()] {
			w.refuse(ruleFunction, refuse("'%s' is not an allowed function.", sqlValueFunctionName(n)))
		}
	case *pg_query.TypeName:
		name, ok := qualifiedName(n.GetNames(), allowedTypes)
		if !ok || n.GetSetof() || n.GetPctType() {
			w.refuse(ruleCast, refuse("Cast to '%s' is not allowed.", name))
		}
	case *pg_query.A_Expr:
		w.operator(n.GetName())
	case *pg_query.SubLink:
		w.operator(n.GetOperName())
	case *pg_query.SortBy:
		w.operator(n.GetUseOp())
	default:
		if name := m.Descriptor().Name(); !allowedNodes[name] {
			w.refuse(ruleNode, refuse("Unsupported SQL construct: %s.", name))
		}
	}
	w.children(m, sc, nil)
}

// children walks every populated message field of m, except skip.
func (w *walker) children(m protoreflect.Message, sc *scope, skip protoreflect.FieldDescriptor) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd == skip {
			return true
		}
		if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
			return true
		}
		switch {
		case fd.IsMap():
			// The parse tree has no map fields; refuse rather than guess.
			w.refuse(ruleNode, refuse("Unsupported SQL construct: %s.", m.Descriptor().Name()))
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				w.walk(l.Get(i).Message(), sc)
			}
		default:
			w.walk(v.Message(), sc)
		}
		return true
	})
}

// selectStmt checks a SELECT, VALUES or set operation. Its WITH names are
// visible in the whole statement (target list, FROM, WHERE, set-operation
// arms, subqueries) and in the bodies of later CTEs of the same WITH, or of
// all of them under WITH RECURSIVE.
func (w *walker) selectStmt(s *pg_query.SelectStmt, m protoreflect.Message, sc *scope) {
	if !literalCount(s.GetLimitCount()) {
		w.refuse(ruleLimit, &Refusal{Reason: reasonLimit})
	}
	if !literalCount(s.GetLimitOffset()) {
		w.refuse(ruleLimit, &Refusal{Reason: reasonOffset})
	}
	inner := sc
	if wc := s.GetWithClause(); wc != nil {
		inner = w.withClause(wc, sc)
	}
	w.children(m, inner, selectWithClause)
}

// withClause checks the CTE bodies of a WITH and returns the scope of the
// statement the WITH belongs to.
func (w *walker) withClause(wc *pg_query.WithClause, sc *scope) *scope {
	all := sc
	for _, c := range wc.GetCtes() {
		if cte := c.GetCommonTableExpr(); cte != nil {
			all = all.with(cte.GetCtename())
		}
	}
	seen := sc
	for _, c := range wc.GetCtes() {
		body := seen
		if wc.GetRecursive() {
			body = all
		}
		w.walk(c.ProtoReflect(), body)
		if cte := c.GetCommonTableExpr(); cte != nil {
			seen = seen.with(cte.GetCtename())
		}
	}
	return all
}

// rangeVar pins an unqualified table reference that is not a visible CTE to
// the omop schema and refuses any other schema or a database qualifier.
func (w *walker) rangeVar(rv *pg_query.RangeVar, sc *scope) {
	switch {
	case rv.GetCatalogname() != "":
		w.refuse(ruleSchema, &Refusal{Reason: reasonCrossDB})
	case rv.GetSchemaname() != "":
		if rv.GetSchemaname() != omopSchema {
			w.refuse(ruleSchema, refuse("Schema '%s' is not accessible. Only the '%s' schema is allowed.", rv.GetSchemaname(), omopSchema))
		}
	case sc.visible(rv.GetRelname()):
	default:
		rv.Schemaname = omopSchema
	}
}

// rangeFunction allows only the allowlisted table functions in FROM, plain,
// LATERAL or in ROWS FROM.
func (w *walker) rangeFunction(rf *pg_query.RangeFunction) {
	for _, item := range rf.GetFunctions() {
		fn := item
		if l := item.GetList(); l != nil && len(l.GetItems()) > 0 {
			fn = l.GetItems()[0]
		}
		var name string
		ok := false
		if call := fn.GetFuncCall(); call != nil {
			name, ok = qualifiedName(call.GetFuncname(), allowedTableFunctions)
		} else if svf := fn.GetSqlvalueFunction(); svf != nil {
			name = sqlValueFunctionName(svf)
		} else {
			name = strings.ToLower(nodeName(fn))
		}
		if !ok {
			w.refuse(ruleTableFunction, refuse("'%s' is not an allowed table-valued function. Allowed: generate_series, unnest.", name))
		}
	}
}

// operator refuses operator names qualified with a schema other than
// pg_catalog (OPERATOR(schema.op)); unqualified operators are built-ins, as
// the database role cannot create any.
func (w *walker) operator(name []*pg_query.Node) {
	if len(name) == 0 {
		return
	}
	parts, ok := stringParts(name)
	if ok && (len(parts) == 1 || (len(parts) == 2 && parts[0] == catalogSchema)) {
		return
	}
	w.refuse(ruleFunction, refuse("Operator '%s' is not allowed.", strings.Join(parts, ".")))
}

// qualifiedName returns the display name of a function or type name and
// whether it is in allowed: unqualified, or qualified with pg_catalog only.
// The parser has already folded unquoted names to lower case; a quoted name
// must match exactly, as the database would look it up.
func qualifiedName(names []*pg_query.Node, allowed map[string]bool) (string, bool) {
	parts, ok := stringParts(names)
	if !ok || len(parts) == 0 {
		return strings.Join(parts, "."), false
	}
	if len(parts) == 2 && parts[0] == catalogSchema {
		parts = parts[1:]
	}
	return strings.Join(parts, "."), len(parts) == 1 && allowed[parts[0]]
}

// stringParts returns the strings of a dotted name; ok is false when a part
// is not a String node.
func stringParts(names []*pg_query.Node) (parts []string, ok bool) {
	parts = make([]string, 0, len(names))
	for _, n := range names {
		s := n.GetString_()
		if s == nil {
			return parts, false
		}
		parts = append(parts, s.GetSval())
	}
	return parts, true
}

// sqlValueFunctionName is the SQL keyword of a SQL value function.
func sqlValueFunctionName(f *pg_query.SQLValueFunction) string {
	if name := sqlValueFunctionNames[f.GetOp()]; name != "" {
		return name
	}
	return strings.ToLower(strings.TrimPrefix(f.GetOp().String(), "SVFOP_"))
}

// nodeName is the type name of the node a Node wraps.
func nodeName(n *pg_query.Node) string {
	m := n.ProtoReflect()
	if fd := m.WhichOneof(nodeOneof); fd != nil {
		return string(m.Get(fd).Message().Descriptor().Name())
	}
	return "unknown"
}

// literalCount reports whether a LIMIT or OFFSET value is absent, NULL or ALL,
// or a non-negative integer literal.
func literalCount(n *pg_query.Node) bool {
	if n == nil {
		return true
	}
	c := n.GetAConst()
	if c == nil {
		return false
	}
	if c.GetIsnull() {
		return true
	}
	switch v := c.GetVal().(type) {
	case *pg_query.A_Const_Ival:
		return v.Ival.GetIval() >= 0
	case *pg_query.A_Const_Fval:
		// Integers beyond 32 bits arrive as Float; decimals are refused.
		f := v.Fval.GetFval()
		return f != "" && strings.Trim(f, "0123456789") == ""
	}
	return false
}
