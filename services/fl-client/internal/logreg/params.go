package logreg

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
)

// Defaults of the optional params.
const (
	DefaultEpochs       = 5
	DefaultLearningRate = 0.5
	DefaultL2           = 0.0
)

// MaxEpochs bounds params.epochs.
const MaxEpochs = 100_000

// ErrInvalidParams marks task params the job refuses; the message names every
// bad field by its path (params.features[2].scale).
var ErrInvalidParams = errors.New("invalid params")

// Feature is one input column and its standardisation: the model sees
// (x - Center) / Scale.
type Feature struct {
	Column string
	Center float64
	Scale  float64
}

// Params are the job's validated task params.
type Params struct {
	Features     []Feature
	Label        string
	Epochs       int
	LearningRate float64
	L2           float64
}

// ParseParams validates the "params" object of task.json and fills in the
// defaults. Every problem is reported, each with its field path.
func ParseParams(raw map[string]any) (Params, error) {
	p := Params{Epochs: DefaultEpochs, LearningRate: DefaultLearningRate, L2: DefaultL2}
	var problems []string
	bad := func(field, format string, args ...any) {
		problems = append(problems, "params."+field+": "+fmt.Sprintf(format, args...))
	}
	for _, k := range sortedKeys(raw) {
		switch k {
		case "features", "label", "epochs", "learning_rate", "l2":
		default:
			bad(k, "unknown field")
		}
	}

	switch fs, ok := raw["features"]; {
	case !ok:
		bad("features", "required")
	default:
		list, isList := fs.([]any)
		if !isList || len(list) == 0 {
			bad("features", "must be a non-empty array")
			break
		}
		seen := map[string]bool{}
		for i, item := range list {
			f, fieldProblems := parseFeature(item)
			for _, fp := range fieldProblems {
				bad(fmt.Sprintf("features[%d]%s", i, fp.path), "%s", fp.problem)
			}
			if f.Column != "" && seen[f.Column] {
				bad(fmt.Sprintf("features[%d].column", i), "column %q appears twice", f.Column)
			}
			seen[f.Column] = true
			p.Features = append(p.Features, f)
		}
	}

	switch l, ok := raw["label"]; {
	case !ok:
		bad("label", "required")
	default:
		s, isString := l.(string)
		if !isString || strings.TrimSpace(s) == "" {
			bad("label", "must be a non-empty column name")
			break
		}
		p.Label = s
		for _, f := range p.Features {
			if f.Column == s {
				bad("label", "column %q is also a feature", s)
			}
		}
	}

	if v, ok := raw["epochs"]; ok {
		n, isNum := v.(float64)
		if !isNum || n != math.Trunc(n) || n < 1 || n > MaxEpochs {
			bad("epochs", "must be an integer between 1 and %d", MaxEpochs)
		} else {
			p.Epochs = int(n)
		}
	}
	if v, ok := raw["learning_rate"]; ok {
		x, isNum := v.(float64)
		if !isNum || !(x > 0) || math.IsInf(x, 0) {
			bad("learning_rate", "must be a finite number > 0")
		} else {
			p.LearningRate = x
		}
	}
	if v, ok := raw["l2"]; ok {
		x, isNum := v.(float64)
		if !isNum || !(x >= 0) || math.IsInf(x, 0) {
			bad("l2", "must be a finite number >= 0")
		} else {
			p.L2 = x
		}
	}
	if len(problems) > 0 {
		return Params{}, fmt.Errorf("%w: %s", ErrInvalidParams, strings.Join(problems, "; "))
	}
	return p, nil
}

type fieldProblem struct{ path, problem string }

// parseFeature reads one element of params.features; paths in the problems
// are relative to it (".scale", or "" for the element itself).
func parseFeature(item any) (Feature, []fieldProblem) {
	obj, ok := item.(map[string]any)
	if !ok {
		return Feature{}, []fieldProblem{{"", "must be an object with column, center and scale"}}
	}
	f := Feature{Center: 0, Scale: 1}
	var out []fieldProblem
	for _, k := range sortedKeys(obj) {
		switch k {
		case "column", "center", "scale":
		default:
			out = append(out, fieldProblem{"." + k, "unknown field"})
		}
	}
	if c, isString := obj["column"].(string); !isString || strings.TrimSpace(c) == "" {
		out = append(out, fieldProblem{".column", "must be a non-empty column name"})
	} else {
		f.Column = c
	}
	if v, present := obj["center"]; present {
		x, isNum := v.(float64)
		if !isNum || math.IsInf(x, 0) || math.IsNaN(x) {
			out = append(out, fieldProblem{".center", "must be a finite number"})
		} else {
			f.Center = x
		}
	}
	if v, present := obj["scale"]; present {
		x, isNum := v.(float64)
		if !isNum || !(x > 0) || math.IsInf(x, 0) {
			out = append(out, fieldProblem{".scale", "must be > 0"})
		} else {
			f.Scale = x
		}
	}
	return f, out
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
