package guard

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// catalogSchema is the only schema that may qualify a function, operator or
// type name; it holds the built-in ones.
const catalogSchema = "pg_catalog"

// allowedFunctions are the functions a cohort query may call, unqualified or
// qualified with pg_catalog. They are side-effect free and reveal nothing
// about the server, its settings, its files or other sessions. COALESCE,
// NULLIF, GREATEST, LEAST, CASE, CURRENT_DATE and similar are parse-tree nodes
// of their own, not function calls.
var allowedFunctions = setOf(
	// Aggregates.
	"count", "sum", "avg", "min", "max",
	"stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp",
	"bool_and", "bool_or", "every", "string_agg", "array_agg",
	"percentile_cont", "percentile_disc", "mode",
	"corr", "covar_pop", "covar_samp",
	"regr_slope", "regr_intercept", "regr_r2", "regr_count",
	"regr_avgx", "regr_avgy", "regr_sxx", "regr_syy", "regr_sxy",
	// Window functions.
	"row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile",
	"lag", "lead", "first_value", "last_value", "nth_value",
	// Mathematics (deterministic: no random).
	"abs", "ceil", "ceiling", "floor", "round", "trunc", "sign", "sqrt", "cbrt",
	"power", "pow", "exp", "ln", "log", "log10", "mod", "div", "width_bucket",
	"degrees", "radians", "gcd", "lcm", "scale",
	// Strings.
	"lower", "upper", "length", "char_length", "character_length", "octet_length",
	"substring", "substr", "btrim", "ltrim", "rtrim", "concat", "concat_ws",
	"replace", "left", "right", "lpad", "rpad", "position", "strpos",
	"split_part", "starts_with", "initcap", "reverse", "translate", "overlay",
	// Dates and times. extract, timezone and overlaps are also what EXTRACT(),
	// AT TIME ZONE and OVERLAPS parse to.
	"age", "date_part", "extract", "date_trunc", "date_bin",
	"make_date", "make_time", "make_timestamp", "make_interval",
	"to_char", "to_date", "to_timestamp", "to_number",
	"justify_days", "justify_hours", "justify_interval", "isfinite", "now",
	"timezone", "overlaps",
	// LIKE ... ESCAPE and SIMILAR TO parse to calls of these helpers.
	"like_escape", "similar_to_escape",
	// Set-returning functions and arrays.
	"generate_series", "unnest", "array_length", "cardinality", "array_position",
	"array_lower", "array_upper", "array_to_string", "string_to_array",
)

// allowedTableFunctions are the functions a query may use as a table in FROM.
var allowedTableFunctions = setOf("generate_series", "unnest")

// allowedTypes are the cast target types: plain numbers, text, dates, times
// and booleans (and arrays of them). Names appear here as the parser reports
// them (integer becomes pg_catalog.int4) and as a user may spell them.
var allowedTypes = setOf(
	"smallint", "int2", "integer", "int", "int4", "bigint", "int8",
	"numeric", "decimal", "real", "float4", "double precision", "float8",
	"text", "varchar", "character varying", "char", "character", "bpchar",
	"date", "timestamp", "timestamptz", "time", "interval", "boolean", "bool",
)

// allowedSQLValueFunctions are the SQL-standard keyword values a query may
// read: the clock only, never the session's user, role, database or schema.
var allowedSQLValueFunctions = map[pg_query.SQLValueFunctionOp]bool{
	pg_query.SQLValueFunctionOp_SVFOP_CURRENT_DATE:        true,
	pg_query.SQLValueFunctionOp_SVFOP_CURRENT_TIME:        true,
	pg_query.SQLValueFunctionOp_SVFOP_CURRENT_TIME_N:      true,
	pg_query.SQLValueFunctionOp_SVFOP_CURRENT_TIMESTAMP:   true,
	pg_query.SQLValueFunctionOp_SVFOP_CURRENT_TIMESTAMP_N: true,
	pg_query.SQLValueFunctionOp_SVFOP_LOCALTIME:           true,
	pg_query.SQLValueFunctionOp_SVFOP_LOCALTIME_N:         true,
	pg_query.SQLValueFunctionOp_SVFOP_LOCALTIMESTAMP:      true,
	pg_query.SQLValueFunctionOp_SVFOP_LOCALTIMESTAMP_N:    true,
}

// sqlValueFunctionNames names the SQL value functions in refusals.
var sqlValueFunctionNames = map[pg_query.SQLValueFunctionOp]string{
	pg_query.SQLValueFunctionOp_SVFOP_CURRENT_DATE:        "current_date",
	pg_query.SQLValueFunctionOp_SVFOP_CURRENT_TIME:        "current_time",
	pg_query.SQLValueFunctionOp_SVFOP_CURRENT_TIME_N:      "current_time",
	pg_query.SQLValueFunctionOp_SVFOP_CURRENT_TIMESTAMP:   "current_timestamp",
	pg_query.SQLValueFunctionOp_SVFOP_CURRENT_TIMESTAMP_N: "current_timestamp",
	pg_query.SQLValueFunctionOp_SVFOP_LOCALTIME:           "localtime",
	pg_query.SQLValueFunctionOp_SVFOP_LOCALTIME_N:         "localtime",
	pg_query.SQLValueFunctionOp_SVFOP_LOCALTIMESTAMP:      "localtimestamp",
	pg_query.SQLValueFunctionOp_SVFOP_LOCALTIMESTAMP_N:    "localtimestamp",
	pg_query.SQLValueFunctionOp_SVFOP_CURRENT_ROLE:        "current_role",
	pg_query.SQLValueFunctionOp_SVFOP_CURRENT_USER:        "current_user",
	pg_query.SQLValueFunctionOp_SVFOP_USER:                "user",
	pg_query.SQLValueFunctionOp_SVFOP_SESSION_USER:        "session_user",
	pg_query.SQLValueFunctionOp_SVFOP_CURRENT_CATALOG:     "current_catalog",
	pg_query.SQLValueFunctionOp_SVFOP_CURRENT_SCHEMA:      "current_schema",
}

// allowedNodes are the parse-tree node types (protobuf message names) that
// may appear anywhere in a checked query. Types with rules of their own
// (SelectStmt, RangeVar, FuncCall, RangeFunction, TypeName, SQLValueFunction,
// A_Expr, SubLink, SortBy) are checked further by the walker. Every other
// type is refused, among them ParamRef, XmlExpr, XmlSerialize,
// RangeTableFunc (XMLTABLE), the JSON nodes, RangeTableSample (TABLESAMPLE),
// ColumnDef (column definition lists), MultiAssignRef, SetToDefault and
// CurrentOfExpr, and any type a newer parser adds.
var allowedNodes = map[protoreflect.Name]bool{
	"SelectStmt": true, "WithClause": true, "CommonTableExpr": true,
	"CTESearchClause": true, "CTECycleClause": true,
	"ResTarget": true, "ColumnRef": true, "A_Star": true, "Alias": true,
	"RangeVar": true, "RangeSubselect": true, "RangeFunction": true, "JoinExpr": true,
	"A_Const": true, "Integer": true, "Float": true, "Boolean": true, "String": true,
	"BitString": true, "List": true,
	"A_Expr": true, "BoolExpr": true, "NullTest": true, "BooleanTest": true,
	"CaseExpr": true, "CaseWhen": true, "CoalesceExpr": true, "MinMaxExpr": true,
	"RowExpr": true, "A_ArrayExpr": true, "A_Indices": true, "A_Indirection": true,
	"SubLink": true, "FuncCall": true, "NamedArgExpr": true, "SQLValueFunction": true,
	"TypeCast": true, "TypeName": true, "CollateClause": true,
	"SortBy": true, "WindowDef": true, "GroupingSet": true, "GroupingFunc": true,
}

func setOf(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}
