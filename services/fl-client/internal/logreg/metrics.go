package logreg

import (
	"cmp"
	"context"
	"slices"
)

// Metric names in metrics.json.
const (
	MetricLoss        = "loss"
	MetricAUC         = "auc"
	MetricAccuracy    = "accuracy"
	MetricTP          = "tp"
	MetricFP          = "fp"
	MetricTN          = "tn"
	MetricFN          = "fn"
	MetricRowsSkipped = "rows_skipped"
	MetricTrainLoss   = "train_loss"
)

// evaluate returns the metrics of m on d: mean log loss, ROC AUC (absent when
// only one class is present), accuracy and the confusion matrix at p ≥ 0.5.
func evaluate(ctx context.Context, d *dataset, m model, workers int) (map[string]float64, error) {
	scores := make([]float64, d.rows())
	s, err := passOver(ctx, d, m, pass{confusion: true, scores: scores}, workers)
	if err != nil {
		return nil, err
	}
	n := float64(d.rows())
	out := map[string]float64{
		MetricLoss:     s.loss / n,
		MetricAccuracy: float64(s.tp+s.tn) / n,
		MetricTP:       float64(s.tp),
		MetricFP:       float64(s.fp),
		MetricTN:       float64(s.tn),
		MetricFN:       float64(s.fn),
	}
	if a, ok := auc(scores, d.y); ok {
		out[MetricAUC] = a
	}
	return out, nil
}

// auc returns the area under the ROC curve of scores against labels (0 or
// 1): the probability that a random positive scores above a random negative,
// ties counting one half. It ranks the scores, giving tied scores their
// average rank (the Mann-Whitney U statistic). ok is false when labels hold
// only one class.
func auc(scores []float64, labels []uint8) (value float64, ok bool) {
	type scored struct {
		s float64
		y uint8
	}
	pairs := make([]scored, len(scores))
	var pos int64
	for i, s := range scores {
		pairs[i] = scored{s, labels[i]}
		pos += int64(labels[i])
	}
	neg := int64(len(scores)) - pos
	if pos == 0 || neg == 0 {
		return 0, false
	}
	slices.SortFunc(pairs, func(a, b scored) int { return cmp.Compare(a.s, b.s) })
	// Sum of the 1-based ranks of the positives, ties at their average rank.
	var rankSum float64
	for i := 0; i < len(pairs); {
		j := i
		var tiedPos int64
		for j < len(pairs) && pairs[j].s == pairs[i].s {
			tiedPos += int64(pairs[j].y)
			j++
		}
		avgRank := float64(i+1+j) / 2 // mean of ranks i+1 .. j
		rankSum += avgRank * float64(tiedPos)
		i = j
	}
	u := rankSum - float64(pos)*float64(pos+1)/2
	return u / (float64(pos) * float64(neg)), true
}
