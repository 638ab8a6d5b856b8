package privacy

import (
	"math"
	"strings"
	"testing"
)

func TestDefaultsAreValid(t *testing.T) {
	t.Parallel()
	c := Defaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	if c.MinCount != 10 || c.ClipNorm != 0 || c.NoiseMultiplier != 0 {
		t.Errorf("defaults = %+v", c)
	}
	for _, m := range []string{"loss", "auc", "accuracy", "train_loss", "sample_count", "tp", "fp", "tn", "fn"} {
		if !c.allowed(m) {
			t.Errorf("%s not allowed by default", m)
		}
	}
	for _, m := range []string{"tp", "fp", "tn", "fn"} {
		if !c.isCount(m) {
			t.Errorf("%s not a count by default", m)
		}
	}
	// The helpers hand out copies: changing one does not change the next.
	c.AllowMetrics[0] = "changed"
	if Defaults().AllowMetrics[0] != "loss" {
		t.Error("defaults share their slices")
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		cfg  Config
		want []string // substrings, all of which must appear
	}{
		{"clip only", Config{ClipNorm: 1}, nil},
		{"clip and noise", Config{ClipNorm: 1, NoiseMultiplier: 1.1, MinCount: 5}, nil},
		{"negative clip", Config{ClipNorm: -1}, []string{"FL_DP_CLIP_NORM must not be negative"}},
		{"NaN clip", Config{ClipNorm: math.NaN()}, []string{"FL_DP_CLIP_NORM must be a finite number"}},
		{"infinite noise", Config{ClipNorm: 1, NoiseMultiplier: math.Inf(1)}, []string{"FL_DP_NOISE_MULTIPLIER must be a finite number"}},
		{"noise without clip", Config{NoiseMultiplier: 0.5}, []string{"FL_DP_NOISE_MULTIPLIER needs FL_DP_CLIP_NORM"}},
		{"negative min count", Config{MinCount: -1}, []string{"FL_MIN_COUNT must not be negative"}},
		{"empty names", Config{AllowMetrics: []string{"loss", ""}, CountMetrics: []string{""}}, []string{"FL_METRICS_ALLOW: entry 2 is empty", "FL_METRICS_COUNTS: entry 1 is empty"}},
		{"every problem at once", Config{ClipNorm: -2, NoiseMultiplier: -1, MinCount: -3}, []string{"FL_DP_CLIP_NORM", "FL_DP_NOISE_MULTIPLIER must not be negative", "FL_MIN_COUNT"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, missing %q", err, w)
				}
			}
		})
	}
}
