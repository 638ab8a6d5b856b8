// Package contract is the job contract of docs/fl-protocol.md as fl-client
// lays it out: the workspace of one task (an input directory the job may only
// read, an output directory it may write), the file names in them and the
// environment a job is given.
package contract

import (
	"fmt"
	"os"
	"path/filepath"
)

// Paths inside a job container.
const (
	ContainerInput  = "/flip/input"
	ContainerOutput = "/flip/output"
)

// File names in the input and output directories.
const (
	ModelFile     = "model.safetensors"
	TaskFile      = "task.json"
	DataDir       = "data"
	DataframeFile = "data/dataframe.csv"
	ImagesDir     = "data/images"
	MetricsFile   = "metrics.json"
)

// Environment variables a job is given.
const (
	EnvInput  = "FLIP_INPUT_DIR"
	EnvOutput = "FLIP_OUTPUT_DIR"
	EnvKind   = "FLIP_TASK_KIND"
	EnvRound  = "FLIP_ROUND"
	EnvRounds = "FLIP_ROUNDS"
	EnvCUDA   = "CUDA_VISIBLE_DEVICES"
	EnvNVIDIA = "NVIDIA_VISIBLE_DEVICES"
)

// SampleCount is the metric every job's metrics.json must carry: the number
// of rows the job used.
const SampleCount = "sample_count"

// TaskFileBody is the content of task.json.
type TaskFileBody struct {
	Kind   string         `json:"kind"`
	Round  int            `json:"round"`
	Rounds int            `json:"rounds"`
	Params map[string]any `json:"params,omitempty"`
}

// Workspace is one task's directories on the host.
type Workspace struct {
	Root   string
	Input  string
	Output string
}

// NewWorkspace creates root/input (with its data directory) and root/output.
func NewWorkspace(root string) (Workspace, error) {
	w := Workspace{Root: root, Input: filepath.Join(root, "input"), Output: filepath.Join(root, "output")}
	for _, d := range []string{filepath.Join(w.Input, DataDir), w.Output} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return Workspace{}, fmt.Errorf("create workspace %s: %w", d, err)
		}
	}
	return w, nil
}

// MetricsLimit is the largest metrics.json fl-client reads.
const MetricsLimit = 1 << 20
