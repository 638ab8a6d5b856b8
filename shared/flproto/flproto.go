// Package flproto holds the wire contract between fl-client and an FL server
// (docs/fl-protocol.md): task, result and manifest types, the routes and the
// headers. The transfer code that moves artifacts in verified chunks lives
// beside it in this package.
package flproto

import (
	"encoding/json"
	"time"
)

// Routes, relative to the server's base URL.
const (
	PathPrefix     = "/fl/v1"
	PathNextTask   = PathPrefix + "/tasks/next"
	PathTask       = PathPrefix + "/tasks/{id}"
	PathHeartbeat  = PathPrefix + "/tasks/{id}/heartbeat"
	PathResult     = PathPrefix + "/tasks/{id}/result"
	PathArtifact   = PathPrefix + "/artifacts/{id}"
	PathChunk      = PathPrefix + "/artifacts/{id}/chunks/{n}"
	PathUploads    = PathPrefix + "/uploads"
	PathUpload     = PathPrefix + "/uploads/{id}"
	PathUploadPart = PathPrefix + "/uploads/{id}/chunks/{n}"
	PathComplete   = PathPrefix + "/uploads/{id}/complete"
)

// Headers.
const (
	HeaderClient      = "X-FL-Client"
	HeaderChunkSHA256 = "X-Chunk-SHA256"
)

// Long-poll bounds of GET /fl/v1/tasks/next.
const (
	DefaultWait = 30 * time.Second
	MaxWait     = 60 * time.Second
)

// Chunk size bounds and the default.
const (
	MinChunkSize     = 64 << 10
	MaxChunkSize     = 64 << 20
	DefaultChunkSize = 8 << 20
)

// Task kinds.
const (
	KindTrain    = "train"
	KindEvaluate = "evaluate"
)

// Result statuses and failure classes.
const (
	StatusOK     = "ok"
	StatusFailed = "failed"

	FailureOOM     = "oom"
	FailureTimeout = "timeout"
	FailureRefused = "refused"
	FailureError   = "error"
)

// BuiltinLogReg is the name of the built-in logistic-regression job.
const BuiltinLogReg = "flip/logistic-regression"

// Task is one client's share of one round of a job.
type Task struct {
	ID        string          `json:"id"`
	JobID     string          `json:"job_id"`
	Kind      string          `json:"kind"`
	Round     int             `json:"round"`
	Rounds    int             `json:"rounds"`
	Model     string          `json:"model"`
	Job       JobRef          `json:"job"`
	Data      DataRef         `json:"data"`
	Resources Resources       `json:"resources"`
	Params    json.RawMessage `json:"params,omitempty"`
	Deadline  time.Time       `json:"deadline"`
}

// JobRef names the program a task runs: a built-in or site-allowed process
// job by Name, or a container image pinned by digest.
type JobRef struct {
	Name  string `json:"name,omitempty"`
	Image string `json:"image,omitempty"`
}

// DataRef says which local data a task's job is given.
type DataRef struct {
	EncryptedProjectID string `json:"encrypted_project_id"`
	Query              string `json:"query"`
	Images             bool   `json:"images,omitempty"`
	NetID              string `json:"net_id,omitempty"`
}

// Resources a job asks for.
type Resources struct {
	GPUs           int `json:"gpus,omitempty"`
	GPUMemoryMiB   int `json:"gpu_memory_mib,omitempty"`
	MemoryMiB      int `json:"memory_mib,omitempty"`
	CPUs           int `json:"cpus,omitempty"`
	TimeoutSeconds int `json:"timeout_seconds,omitempty"`
}

// Heartbeat is the answer to POST /fl/v1/tasks/{id}/heartbeat.
type Heartbeat struct {
	Cancel bool `json:"cancel"`
}

// Result is what a client returns for a task.
type Result struct {
	Status      string             `json:"status"`
	Failure     string             `json:"failure,omitempty"`
	Error       string             `json:"error,omitempty"`
	Update      string             `json:"update,omitempty"`
	Metrics     map[string]float64 `json:"metrics,omitempty"`
	Suppressed  []string           `json:"suppressed,omitempty"`
	SampleCount int64              `json:"sample_count"`
}

// Manifest describes an artifact: its content address, size and the digest
// of every chunk.
type Manifest struct {
	ID        string   `json:"id,omitempty"`
	Size      int64    `json:"size"`
	SHA256    string   `json:"sha256"`
	ChunkSize int64    `json:"chunk_size"`
	Chunks    []string `json:"chunks"`
}

// UploadState is the server's view of an open upload.
type UploadState struct {
	ID       string `json:"id"`
	Missing  []int  `json:"missing"`
	Artifact string `json:"artifact,omitempty"`
}

// CompleteRequest is the body of POST /fl/v1/uploads/{id}/complete: the
// whole-file SHA-256, required when the announce deferred it (an empty or
// absent body otherwise).
type CompleteRequest struct {
	SHA256 string `json:"sha256,omitempty"`
}

// Completed is the answer to POST /fl/v1/uploads/{id}/complete.
type Completed struct {
	Artifact string `json:"artifact"`
}

// Problem is the body of every refused request.
type Problem struct {
	Detail  string `json:"detail"`
	Missing []int  `json:"missing,omitempty"`
}

// ArtifactID is the content address of a file whose SHA-256 is hexDigest.
func ArtifactID(hexDigest string) string { return "sha256:" + hexDigest }
