package privacy

import (
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/flip-trust/node/shared/disclosure"
)

// ErrBelowFloor marks a task whose sample count is below the site's floor
// (FL_MIN_COUNT): the caller fails the task as "refused" and sends no
// metrics.
var ErrBelowFloor = errors.New("sample count below the site's floor")

// Metrics applies the metrics filters to what a job reported. It keeps the
// allowlisted, finite metrics; a metric not on the allowlist and a
// non-finite value are dropped and named in suppressed (sorted). Count
// metrics (the confusion matrix's cells) pass the disclosure layer as one
// table whose total, the sample count, leaves beside them: a count with
// 0 < n < floor is withheld, and so are further counts where the sample
// count would otherwise give a withheld one away (disclosure.Policy.Vector);
// a count that is not a whole, non-negative number is withheld too. A
// sampleCount below cfg.MinCount is an error wrapping ErrBelowFloor, and then
// nothing is kept.
func Metrics(cfg Config, metrics map[string]float64, sampleCount int64) (kept map[string]float64, suppressed []string, err error) {
	if sampleCount < cfg.MinCount {
		return nil, nil, fmt.Errorf("sample count %d, floor %d: %w", sampleCount, cfg.MinCount, ErrBelowFloor)
	}
	p, err := disclosure.NewPolicy(max(cfg.MinCount, 1), 0, 0)
	if err != nil {
		return nil, nil, err
	}
	kept = make(map[string]float64, len(metrics))
	suppressed = []string{}
	var (
		countNames []string
		counts     []disclosure.Subjects
	)
	for name, v := range metrics {
		switch {
		case !cfg.allowed(name), math.IsNaN(v) || math.IsInf(v, 0):
			suppressed = append(suppressed, name)
		case cfg.isCount(name):
			if v < 0 || v != math.Trunc(v) || v > math.MaxInt32 {
				suppressed = append(suppressed, name)
				continue
			}
			countNames = append(countNames, name)
			counts = append(counts, disclosure.Subjects(v))
		default:
			kept[name] = v
		}
	}
	// Order the table by name so that complements are chosen the same way
	// whatever the map order.
	sort.Sort(byName{countNames, counts})
	table := p.Vector(counts, true)
	for i, name := range countNames {
		if n, ok := table.Cells[i].Value(); ok {
			kept[name] = float64(n)
		} else {
			suppressed = append(suppressed, name)
		}
	}
	sort.Strings(suppressed)
	return kept, suppressed, nil
}

type byName struct {
	names  []string
	counts []disclosure.Subjects
}

func (b byName) Len() int           { return len(b.names) }
func (b byName) Less(i, j int) bool { return b.names[i] < b.names[j] }
func (b byName) Swap(i, j int) {
	b.names[i], b.names[j] = b.names[j], b.names[i]
	b.counts[i], b.counts[j] = b.counts[j], b.counts[i]
}
