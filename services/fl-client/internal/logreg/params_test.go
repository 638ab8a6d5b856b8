package logreg

import (
	"errors"
	"strings"
	"testing"
)

func TestParseParamsDefaults(t *testing.T) {
	t.Parallel()
	p, err := ParseParams(map[string]any{
		"features": []any{map[string]any{"column": "age", "center": 60.0, "scale": 15.0}, map[string]any{"column": "male"}},
		"label":    "outcome",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Params{
		Features:     []Feature{{Column: "age", Center: 60, Scale: 15}, {Column: "male", Center: 0, Scale: 1}},
		Label:        "outcome",
		Epochs:       DefaultEpochs,
		LearningRate: DefaultLearningRate,
		L2:           DefaultL2,
	}
	if len(p.Features) != 2 || p.Features[0] != want.Features[0] || p.Features[1] != want.Features[1] ||
		p.Label != want.Label || p.Epochs != 5 || p.LearningRate != 0.5 || p.L2 != 0 {
		t.Errorf("ParseParams = %+v, want %+v", p, want)
	}

	p, err = ParseParams(map[string]any{
		"features": []any{map[string]any{"column": "age"}}, "label": "y",
		"epochs": 12.0, "learning_rate": 0.1, "l2": 0.01,
	})
	if err != nil {
		t.Fatal(err)
	}
	if p.Epochs != 12 || p.LearningRate != 0.1 || p.L2 != 0.01 {
		t.Errorf("ParseParams = %+v, want epochs 12, learning_rate 0.1, l2 0.01", p)
	}
}

func TestParseParamsNamesEveryBadField(t *testing.T) {
	t.Parallel()
	age := map[string]any{"column": "age"}
	cases := []struct {
		name   string
		params map[string]any
		want   []string
	}{
		{"nothing", nil, []string{"params.features: required", "params.label: required"}},
		{"empty features", map[string]any{"features": []any{}, "label": "y"}, []string{"params.features: must be a non-empty array"}},
		{"features not a list", map[string]any{"features": "age", "label": "y"}, []string{"params.features: must be a non-empty array"}},
		{"feature not an object", map[string]any{"features": []any{age, "bmi"}, "label": "y"}, []string{"params.features[1]: must be an object"}},
		{"no column", map[string]any{"features": []any{map[string]any{"scale": 2.0}}, "label": "y"}, []string{"params.features[0].column: must be a non-empty column name"}},
		{"zero scale", map[string]any{"features": []any{age, age, map[string]any{"column": "bmi", "scale": 0.0}}, "label": "y"},
			[]string{"params.features[2].scale: must be > 0", `params.features[1].column: column "age" appears twice`}},
		{"negative scale", map[string]any{"features": []any{map[string]any{"column": "bmi", "scale": -1.0}}, "label": "y"}, []string{"params.features[0].scale: must be > 0"}},
		{"scale not a number", map[string]any{"features": []any{map[string]any{"column": "bmi", "scale": "5"}}, "label": "y"}, []string{"params.features[0].scale: must be > 0"}},
		{"center not a number", map[string]any{"features": []any{map[string]any{"column": "bmi", "center": true}}, "label": "y"}, []string{"params.features[0].center: must be a finite number"}},
		{"unknown feature field", map[string]any{"features": []any{map[string]any{"column": "bmi", "mean": 1.0}}, "label": "y"}, []string{"params.features[0].mean: unknown field"}},
		{"label is a feature", map[string]any{"features": []any{age}, "label": "age"}, []string{`params.label: column "age" is also a feature`}},
		{"label empty", map[string]any{"features": []any{age}, "label": ""}, []string{"params.label: must be a non-empty column name"}},
		{"epochs", map[string]any{"features": []any{age}, "label": "y", "epochs": 1.5}, []string{"params.epochs: must be an integer between 1 and 100000"}},
		{"epochs zero", map[string]any{"features": []any{age}, "label": "y", "epochs": 0.0}, []string{"params.epochs: must be an integer"}},
		{"learning rate", map[string]any{"features": []any{age}, "label": "y", "learning_rate": -0.1}, []string{"params.learning_rate: must be a finite number > 0"}},
		{"l2", map[string]any{"features": []any{age}, "label": "y", "l2": "none"}, []string{"params.l2: must be a finite number >= 0"}},
		{"unknown field", map[string]any{"features": []any{age}, "label": "y", "learning_rte": 0.1}, []string{"params.learning_rte: unknown field"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseParams(c.params)
			if !errors.Is(err, ErrInvalidParams) {
				t.Fatalf("ParseParams: %v, want ErrInvalidParams", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}
