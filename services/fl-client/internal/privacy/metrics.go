package privacy

import (
	"errors"
	"fmt"
	"math"
	"sort"
)

// ErrBelowFloor marks a task whose sample count is below the site's floor
// (FL_MIN_COUNT): the caller fails the task as "refused" and sends no
// metrics.
var ErrBelowFloor = errors.New("sample count below the site's floor")

// Metrics applies the metrics filters to what a job reported. It keeps the
// allowlisted, finite metrics; a count metric below cfg.MinCount, a metric
// not on the allowlist and a non-finite value are dropped and named in
// suppressed (sorted). A sampleCount below cfg.MinCount is an error wrapping
// ErrBelowFloor, and then nothing is kept.
func Metrics(cfg Config, metrics map[string]float64, sampleCount int64) (kept map[string]float64, suppressed []string, err error) {
	if sampleCount < cfg.MinCount {
		return nil, nil, fmt.Errorf("sample count %d, floor %d: %w", sampleCount, cfg.MinCount, ErrBelowFloor)
	}
	kept = make(map[string]float64, len(metrics))
	suppressed = []string{}
	for name, v := range metrics {
		switch {
		case !cfg.allowed(name),
			math.IsNaN(v) || math.IsInf(v, 0),
			cfg.isCount(name) && v < float64(cfg.MinCount):
			suppressed = append(suppressed, name)
		default:
			kept[name] = v
		}
	}
	sort.Strings(suppressed)
	return kept, suppressed, nil
}
