package privacy

import (
	"errors"
	"maps"
	"math"
	"slices"
	"testing"
)

func TestMetrics(t *testing.T) {
	t.Parallel()
	def := Defaults()
	cases := []struct {
		name           string
		cfg            Config
		metrics        map[string]float64
		samples        int64
		wantKept       map[string]float64
		wantSuppressed []string
		wantFloor      bool
	}{
		{
			name:           "allowlisted metrics pass, others are named",
			cfg:            def,
			metrics:        map[string]float64{"loss": 0.41, "auc": 0.71, "patient_age_max": 93, "tp": 12},
			samples:        1890,
			wantKept:       map[string]float64{"loss": 0.41, "auc": 0.71, "tp": 12},
			wantSuppressed: []string{"patient_age_max"},
		},
		{
			// fp (9) is small; with the sample count released, tn (the
			// smallest other non-zero cell) is withheld too, or 59 − 40 − 0
			// would give fp away. A true 0 is released as 0.
			name:           "count metrics below the floor are suppressed with their complement, sorted",
			cfg:            def,
			metrics:        map[string]float64{"tp": 40, "fp": 9, "tn": 10, "fn": 0, "accuracy": 0.9},
			samples:        59,
			wantKept:       map[string]float64{"tp": 40, "fn": 0, "accuracy": 0.9},
			wantSuppressed: []string{"fp", "tn"},
		},
		{
			name:           "counts that are not whole numbers are withheld",
			cfg:            def,
			metrics:        map[string]float64{"tp": 40.5, "fp": -1, "tn": 50, "fn": 60},
			samples:        150,
			wantKept:       map[string]float64{"tn": 50, "fn": 60},
			wantSuppressed: []string{"fp", "tp"},
		},
		{
			name:           "non-count metrics are not held to the floor",
			cfg:            def,
			metrics:        map[string]float64{"loss": 0.01, "train_loss": 3},
			samples:        10,
			wantKept:       map[string]float64{"loss": 0.01, "train_loss": 3},
			wantSuppressed: []string{},
		},
		{
			name:           "non-finite values are suppressed",
			cfg:            def,
			metrics:        map[string]float64{"loss": math.NaN(), "auc": math.Inf(1), "accuracy": 0.5},
			samples:        100,
			wantKept:       map[string]float64{"accuracy": 0.5},
			wantSuppressed: []string{"auc", "loss"},
		},
		{
			name:           "a site's own lists",
			cfg:            Config{AllowMetrics: []string{"dice", "cases"}, CountMetrics: []string{"cases"}, MinCount: 20},
			metrics:        map[string]float64{"dice": 0.8, "cases": 19, "loss": 0.2},
			samples:        20,
			wantKept:       map[string]float64{"dice": 0.8},
			wantSuppressed: []string{"cases", "loss"},
		},
		{
			name:      "sample count below the floor refuses the task",
			cfg:       def,
			metrics:   map[string]float64{"loss": 0.4},
			samples:   9,
			wantFloor: true,
		},
		{
			name:           "no metrics",
			cfg:            def,
			samples:        10,
			wantKept:       map[string]float64{},
			wantSuppressed: []string{},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			kept, suppressed, err := Metrics(tc.cfg, tc.metrics, tc.samples)
			if tc.wantFloor {
				if !errors.Is(err, ErrBelowFloor) {
					t.Fatalf("err = %v, want ErrBelowFloor", err)
				}
				if kept != nil || suppressed != nil {
					t.Errorf("metrics leaked past the floor: %v %v", kept, suppressed)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(kept, tc.wantKept) {
				t.Errorf("kept = %v, want %v", kept, tc.wantKept)
			}
			if !slices.Equal(suppressed, tc.wantSuppressed) {
				t.Errorf("suppressed = %q, want %q", suppressed, tc.wantSuppressed)
			}
		})
	}
}
