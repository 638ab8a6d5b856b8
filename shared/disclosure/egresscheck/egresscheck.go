// Package egresscheck is a static check, run from each service's tests, that
// outgoing payloads pass the disclosure layer: the functions that write a
// payload out of the trust must return or take a disclosure.Released (which
// only disclosure.Seal makes), and the payload types they seal may only be
// built in the files that release them.
//
// It reads source with go/parser; it does not type-check, so it matches the
// package-qualified name as written (an import renamed away from
// "disclosure" is itself reported).
package egresscheck

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// DisclosureImport is the disclosure package's import path.
const DisclosureImport = "github.com/flip-trust/node/shared/disclosure"

// Rules say what one package directory must satisfy.
type Rules struct {
	// Senders are functions or methods (by name) that write a payload out
	// of the trust: each must have a disclosure.Released result or
	// parameter, and must exist.
	Senders []string
	// Payloads maps a payload type of the package to the files (base
	// names) allowed to build it with a composite literal.
	Payloads map[string][]string
}

// Check parses the non-test Go files of dir and returns one line per
// violation, sorted; none means the package passes.
func Check(dir string, r Rules) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	fset := token.NewFileSet()
	var out []string
	found := map[string]bool{}
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", path, err)
		}
		base := filepath.Base(path)
		name := disclosureName(f)
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.FuncDecl:
				if !slices.Contains(r.Senders, n.Name.Name) {
					return true
				}
				found[n.Name.Name] = true
				if !takesReleased(n.Type, name) {
					out = append(out, fmt.Sprintf("%s: %s writes an outgoing payload but neither returns nor takes disclosure.Released",
						fset.Position(n.Pos()), n.Name.Name))
				}
			case *ast.CompositeLit:
				id, ok := n.Type.(*ast.Ident)
				if !ok {
					return true
				}
				allowed, governed := r.Payloads[id.Name]
				if governed && !slices.Contains(allowed, base) {
					out = append(out, fmt.Sprintf("%s: payload type %s built outside %s",
						fset.Position(n.Pos()), id.Name, strings.Join(allowed, ", ")))
				}
			}
			return true
		})
	}
	for _, s := range r.Senders {
		if !found[s] {
			out = append(out, fmt.Sprintf("%s: sender %s not found (renamed? update the rules)", dir, s))
		}
	}
	sort.Strings(out)
	return out, nil
}

// disclosureName is the name f imports the disclosure package under ("" if
// it does not import it).
func disclosureName(f *ast.File) string {
	for _, imp := range f.Imports {
		if p, _ := strconv.Unquote(imp.Path.Value); p == DisclosureImport {
			if imp.Name != nil {
				return imp.Name.Name
			}
			return "disclosure"
		}
	}
	return ""
}

func takesReleased(ft *ast.FuncType, pkg string) bool {
	if pkg == "" {
		return false
	}
	for _, fl := range []*ast.FieldList{ft.Params, ft.Results} {
		if fl == nil {
			continue
		}
		for _, f := range fl.List {
			if isReleased(f.Type, pkg) {
				return true
			}
		}
	}
	return false
}

func isReleased(e ast.Expr, pkg string) bool {
	if s, ok := e.(*ast.StarExpr); ok {
		e = s.X
	}
	sel, ok := e.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	x, ok := sel.X.(*ast.Ident)
	return ok && x.Name == pkg && sel.Sel.Name == "Released"
}
