// Package privacy holds fl-client's site filters (docs/fl-protocol.md, "The
// site's filters"): what a job produced passes through them before anything
// leaves the trust, and no job can weaken them.
//
// Update turns a job's trained weights into the training update (local −
// global), clips its L2 norm and adds Gaussian noise from a
// cryptographically seeded generator, streaming both files in blocks so that
// memory stays constant in the model's size. Metrics applies the metrics
// allowlist, small-count suppression and the sample-count floor.
package privacy

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// DefaultMinCount is the default floor for the sample count and for count
// metrics (FL_MIN_COUNT).
const DefaultMinCount = 10

// Config is the site's filter configuration.
type Config struct {
	// ClipNorm bounds the L2 norm of the whole update (FL_DP_CLIP_NORM);
	// 0 means no clipping.
	ClipNorm float64
	// NoiseMultiplier scales Gaussian noise to NoiseMultiplier × ClipNorm
	// standard deviations per coordinate (FL_DP_NOISE_MULTIPLIER); 0 means
	// no noise. Noise requires a clip norm.
	NoiseMultiplier float64
	// AllowMetrics names the metrics that may leave (FL_METRICS_ALLOW).
	AllowMetrics []string
	// CountMetrics names the allowed metrics that are counts and are
	// suppressed below MinCount (FL_METRICS_COUNTS).
	CountMetrics []string
	// MinCount is the floor for the sample count and count metrics
	// (FL_MIN_COUNT).
	MinCount int64
}

// Defaults returns the default filters: no clipping or noise, the default
// metric lists and a floor of DefaultMinCount.
func Defaults() Config {
	return Config{
		AllowMetrics: DefaultAllowMetrics(),
		CountMetrics: DefaultCountMetrics(),
		MinCount:     DefaultMinCount,
	}
}

// DefaultAllowMetrics returns the default metrics allowlist.
func DefaultAllowMetrics() []string {
	return []string{"loss", "auc", "accuracy", "train_loss", "sample_count", "tp", "fp", "tn", "fn"}
}

// DefaultCountMetrics returns the default count metrics: the confusion
// matrix's cells.
func DefaultCountMetrics() []string {
	return []string{"tp", "fp", "tn", "fn"}
}

// Validate reports every problem in c at once.
func (c Config) Validate() error {
	var errs []error
	check := func(name string, v float64) {
		switch {
		case math.IsNaN(v) || math.IsInf(v, 0):
			errs = append(errs, fmt.Errorf("%s must be a finite number, got %v", name, v))
		case v < 0:
			errs = append(errs, fmt.Errorf("%s must not be negative, got %v", name, v))
		}
	}
	check("FL_DP_CLIP_NORM", c.ClipNorm)
	check("FL_DP_NOISE_MULTIPLIER", c.NoiseMultiplier)
	if c.NoiseMultiplier > 0 && !(c.ClipNorm > 0) {
		errs = append(errs, errors.New("FL_DP_NOISE_MULTIPLIER needs FL_DP_CLIP_NORM: noise is scaled to the clipping norm"))
	}
	if c.MinCount < 0 {
		errs = append(errs, fmt.Errorf("FL_MIN_COUNT must not be negative, got %d", c.MinCount))
	}
	for _, l := range []struct {
		name  string
		names []string
	}{{"FL_METRICS_ALLOW", c.AllowMetrics}, {"FL_METRICS_COUNTS", c.CountMetrics}} {
		for i, n := range l.names {
			if n == "" {
				errs = append(errs, fmt.Errorf("%s: entry %d is empty", l.name, i+1))
			}
		}
	}
	return errors.Join(errs...)
}

func (c Config) allowed(name string) bool { return slices.Contains(c.AllowMetrics, name) }

func (c Config) isCount(name string) bool { return slices.Contains(c.CountMetrics, name) }
