// Package logreg is fl-client's built-in FL job flip/logistic-regression: a
// logistic regression over standardised columns of the cohort's dataframe,
// trained locally by full-batch gradient descent.
//
// The job follows the job contract of docs/fl-protocol.md exactly as an
// external job would: Run reads task.json, model.safetensors and
// data/dataframe.csv from the workspace's input directory and writes
// metrics.json (and, for a train task, the trained model.safetensors) to its
// output directory. The model is two tensors, weight (shape [F], one per
// feature in params) and bias (shape [1]), F32 or F64; the trained model is
// written in the input's dtypes.
//
// Errors and metrics carry counts and column names only, never a value from
// the data.
package logreg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/flip-trust/node/services/fl-client/internal/contract"
	"github.com/flip-trust/node/shared/flproto"
)

// Name is the job name tasks use for this job.
const Name = flproto.BuiltinLogReg

// maxTaskFile bounds task.json.
const maxTaskFile = 1 << 20

// ErrTask marks a task.json the job cannot use.
var ErrTask = errors.New("invalid task file")

// errDiverged is a training run whose weights or loss left the finite numbers.
var errDiverged = errors.New("train: the weights diverged; lower params.learning_rate")

// Run runs one task of the job in ws: it evaluates the given model on the
// local dataframe and, for a train task, trains it for params.epochs steps
// and writes the result. It returns when the work is done, failed, or ctx
// ended; every goroutine it starts has returned by then.
//
// metrics.json holds loss, auc (omitted when the data has one class),
// accuracy, tp, fp, tn and fn of the given model, sample_count,
// rows_skipped and, for train, train_loss of the trained model.
func Run(ctx context.Context, ws contract.Workspace) error {
	if err := run(ctx, ws, defaultWorkers()); err != nil {
		return withoutPaths(err, ws)
	}
	return nil
}

// pathlessError is an error whose message names workspace files relative to
// the workspace; the original error stays in the chain.
type pathlessError struct {
	msg string
	err error
}

func (e *pathlessError) Error() string { return e.msg }
func (e *pathlessError) Unwrap() error { return e.err }

// withoutPaths rewrites the workspace's directories in err's message to
// "input" and "output", so that an error never reveals a host path.
func withoutPaths(err error, ws contract.Workspace) error {
	msg := err.Error()
	for _, d := range []struct{ dir, name string }{{ws.Input, "input"}, {ws.Output, "output"}, {ws.Root, "workspace"}} {
		if d.dir != "" {
			msg = strings.ReplaceAll(msg, d.dir, d.name)
		}
	}
	if msg == err.Error() {
		return err
	}
	return &pathlessError{msg: msg, err: err}
}

func run(ctx context.Context, ws contract.Workspace, workers int) error {
	task, err := readTask(filepath.Join(ws.Input, contract.TaskFile))
	if err != nil {
		return err
	}
	p, err := ParseParams(task.Params)
	if err != nil {
		return err
	}
	given, err := loadModel(filepath.Join(ws.Input, contract.ModelFile), len(p.Features))
	if err != nil {
		return err
	}
	d, err := readDataframe(ctx, filepath.Join(ws.Input, contract.DataframeFile), p)
	if err != nil {
		return err
	}
	if d.rows() == 0 {
		return fmt.Errorf("%w: no usable rows (%d skipped)", ErrData, d.skipped)
	}

	metrics, err := evaluate(ctx, d, given.model, workers)
	if err != nil {
		return fmt.Errorf("evaluate: %w", err)
	}
	metrics[contract.SampleCount] = float64(d.rows())
	metrics[MetricRowsSkipped] = float64(d.skipped)

	if task.Kind == flproto.KindTrain {
		trained, err := train(ctx, d, given.model, p, workers)
		if err != nil {
			return fmt.Errorf("train: %w", err)
		}
		s, err := passOver(ctx, d, trained, pass{}, workers)
		if err != nil {
			return fmt.Errorf("train: %w", err)
		}
		trainLoss := s.loss / float64(d.rows())
		if !finite(append([]float64{trained.b, trainLoss}, trained.w...)) {
			return errDiverged
		}
		metrics[MetricTrainLoss] = trainLoss
		if err := writeModel(ws.Output, contract.ModelFile, given, trained); err != nil {
			return err
		}
	}
	for name, v := range metrics {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("metric %s is not finite", name)
		}
	}
	return writeAtomic(ws.Output, contract.MetricsFile, func(w io.Writer) error {
		return json.NewEncoder(w).Encode(metrics)
	})
}

// readTask reads and checks task.json.
func readTask(path string) (contract.TaskFileBody, error) {
	f, err := os.Open(path)
	if err != nil {
		return contract.TaskFileBody{}, fmt.Errorf("read task: %w", err)
	}
	defer f.Close()
	var t contract.TaskFileBody
	if err := json.NewDecoder(io.LimitReader(f, maxTaskFile)).Decode(&t); err != nil {
		return contract.TaskFileBody{}, fmt.Errorf("%w: %w", ErrTask, err)
	}
	if t.Kind != flproto.KindTrain && t.Kind != flproto.KindEvaluate {
		return contract.TaskFileBody{}, fmt.Errorf("%w: kind %q, want %q or %q", ErrTask, t.Kind, flproto.KindTrain, flproto.KindEvaluate)
	}
	return t, nil
}

// readDataframe reads the dataframe at path.
func readDataframe(ctx context.Context, path string, p Params) (*dataset, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read dataframe: %w", err)
	}
	defer f.Close()
	var size int64
	if st, err := f.Stat(); err == nil {
		size = st.Size()
	}
	d, err := readDataset(ctx, f, size, p)
	if err != nil {
		return nil, fmt.Errorf("read dataframe: %w", err)
	}
	return d, nil
}
