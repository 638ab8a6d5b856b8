// Package hubapi holds the wire types of the FLIP hub ↔ trust contract: the
// four trust-facing endpoints, the seven task types and the task states.
// Both the trust side (trust-api) and the development hub use these types, so
// a change here is a change to the wire.
package hubapi

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Paths of the trust-facing hub API, relative to CENTRAL_HUB_API_URL (which
// already ends in /api).
const (
	PathHeartbeat     = "/trust/heartbeat"
	PathPending       = "/tasks/pending"
	PathCohortResults = "/cohort/results"
)

// PathResult is the result path for a task id.
func PathResult(taskID string) string { return "/tasks/" + taskID + "/result" }

// DefaultKeyHeader is the platform's header for the trust API key; its value
// is the raw key with no scheme prefix.
const DefaultKeyHeader = "Authorization"

// MaxResultLength bounds a task result string, as the hub does.
const MaxResultLength = 10_000_000

// TaskType names a unit of work the hub hands to a trust.
type TaskType string

// The seven task types of the FLIP hub.
const (
	CohortQuery       TaskType = "cohort_query"
	CreateImaging     TaskType = "create_imaging"
	DeleteImaging     TaskType = "delete_imaging"
	GetImagingStatus  TaskType = "get_imaging_status"
	ReimportStudies   TaskType = "reimport_studies"
	UpdateUserProfile TaskType = "update_user_profile"
	PersistCohort     TaskType = "persist_cohort"
)

// TaskTypes lists every task type in the hub's order.
var TaskTypes = []TaskType{CohortQuery, CreateImaging, DeleteImaging, GetImagingStatus, ReimportStudies, UpdateUserProfile, PersistCohort}

// Valid reports whether t is one of the seven task types.
func (t TaskType) Valid() bool {
	for _, k := range TaskTypes {
		if k == t {
			return true
		}
	}
	return false
}

// Status is a task's state on the hub.
type Status string

// Task states of the hub's state machine.
const (
	Pending    Status = "PENDING"
	InProgress Status = "IN_PROGRESS"
	Completed  Status = "COMPLETED"
	Failed     Status = "FAILED"
	Cancelled  Status = "CANCELLED"
)

// Identity is embedded in every trust-facing hub reply.
type Identity struct {
	TrustID   string `json:"trust_id"`
	TrustName string `json:"trust_name"`
}

// HeartbeatReply answers POST /trust/heartbeat.
type HeartbeatReply struct {
	Identity
	Message           string  `json:"message"`
	HubVersion        *string `json:"hub_version,omitempty"`
	AESKeyFingerprint *string `json:"aes_key_fingerprint,omitempty"`
}

// Service health states accepted by the hub.
const (
	HealthHealthy  = "healthy"
	HealthDegraded = "degraded"
	HealthDown     = "down"
	HealthUnknown  = "unknown"
)

// ServiceHealth is one entry of a heartbeat's health snapshot.
type ServiceHealth struct {
	Status     string  `json:"status"`
	Version    *string `json:"version"`
	ResponseMS *int    `json:"response_ms"`
}

// HealthSnapshot is the optional heartbeat body.
type HealthSnapshot struct {
	Services    map[string]ServiceHealth `json:"services"`
	CollectedAt *time.Time               `json:"collected_at,omitempty"`
}

// Task is one dispatched task; Payload is a sealed envelope.
type Task struct {
	ID        string   `json:"id"`
	TaskType  TaskType `json:"task_type"`
	Payload   string   `json:"payload"`
	CreatedAt string   `json:"created_at"`
}

// PendingReply answers GET /tasks/pending.
type PendingReply struct {
	Identity
	Tasks []Task `json:"tasks"`
}

// TaskResult is the body of POST /tasks/{id}/result.
type TaskResult struct {
	Success bool    `json:"success"`
	Result  *string `json:"result"`
}

// ResultReply answers POST /tasks/{id}/result.
type ResultReply struct {
	Identity
	Message string `json:"message"`
}

// CohortValue is one bucket of a cohort statistic.
type CohortValue struct {
	Value string `json:"value"`
	Count int    `json:"count"`
}

// CohortStat is one named cohort statistic.
type CohortStat struct {
	Name    string        `json:"name"`
	Results []CohortValue `json:"results"`
}

// CohortResults is the body of POST /cohort/results.
type CohortResults struct {
	QueryID     string       `json:"query_id"`
	TrustID     string       `json:"trust_id"`
	Created     string       `json:"created"`
	RecordCount int          `json:"record_count"`
	Data        []CohortStat `json:"data"`
	Suppressed  bool         `json:"suppressed"`
	Error       *string      `json:"error"`
}

// CohortResultsReply answers POST /cohort/results.
type CohortResultsReply struct {
	Message string `json:"message"`
}

// ErrorReply is the hub's error body.
type ErrorReply struct {
	Detail any `json:"detail"`
}

var uuidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// ValidTaskID reports whether id is a canonical UUID, safe to put in a path.
func ValidTaskID(id string) bool { return uuidPattern.MatchString(id) }

// TaskErrorResult is the result text a trust reports for a failed task: the
// JSON object {"error": msg}, with "status_code" only when one is known,
// written with the separators FLIP's trust writes (", " and ": ").
func TaskErrorResult(msg string, statusCode *int) string {
	var b strings.Builder
	b.WriteString(`{"error": `)
	b.WriteString(jsonString(msg))
	if statusCode != nil {
		b.WriteString(`, "status_code": `)
		b.WriteString(strconv.Itoa(*statusCode))
	}
	b.WriteString("}")
	return b.String()
}

func jsonString(s string) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return strings.TrimSuffix(buf.String(), "\n")
}
