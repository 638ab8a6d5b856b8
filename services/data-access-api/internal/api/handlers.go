package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/flip-trust/node/services/data-access-api/internal/cohort"
	"github.com/flip-trust/node/services/data-access-api/internal/policy"
	"github.com/flip-trust/node/services/data-access-api/internal/snapshot"
	"github.com/flip-trust/node/shared/disclosure"
	"github.com/flip-trust/node/shared/httpx"
	"github.com/flip-trust/node/shared/logging"
)

// CohortQueryInput is POST /cohort's body (trust-api forwards the hub task).
type CohortQueryInput struct {
	EncryptedProjectID *string `json:"encrypted_project_id"`
	QueryID            *string `json:"query_id"`
	QueryName          *string `json:"query_name"`
	Query              *string `json:"query"`
	TrustID            *string `json:"trust_id"`
}

// StatisticsResponse is FLIP's statistics body. Every count in it is a
// disclosure.Cell; the handler seals it (disclosure.Seal) before it leaves.
type StatisticsResponse struct {
	QueryID     string
	TrustID     string
	RecordCount disclosure.Cell
	Created     string
	Data        []cohort.ReleasedChart
}

// MarshalJSON writes FLIP's wire shape: a withheld record count is
// "record_count": 0 beside "suppressed": true, never a bare 0.
func (s StatisticsResponse) MarshalJSON() ([]byte, error) {
	data := s.Data
	if data == nil {
		data = []cohort.ReleasedChart{}
	}
	return json.Marshal(struct {
		QueryID     string                 `json:"query_id"`
		TrustID     string                 `json:"trust_id"`
		RecordCount int64                  `json:"record_count"`
		Created     string                 `json:"created"`
		Data        []cohort.ReleasedChart `json:"data"`
		Suppressed  bool                   `json:"suppressed"`
	}{s.QueryID, s.TrustID, s.RecordCount.OrZero(), s.Created, data, s.RecordCount.IsSuppressed()})
}

// statistics serves POST /cohort: disclosure-controlled statistics of live
// OMOP, computed in the database. A cohort below the floor, an uncountable
// one and a policy denial all answer the same suppressed 200.
func (a *API) statistics(r *http.Request) (disclosure.Released, error) {
	resp, err := a.statisticsBody(r)
	if err != nil {
		return disclosure.Released{}, err
	}
	return disclosure.Seal(resp)
}

func (a *API) statisticsBody(r *http.Request) (StatisticsResponse, error) {
	ctx := r.Context()
	var in CohortQueryInput
	if err := httpx.DecodeJSON(r, &in); err != nil {
		return StatisticsResponse{}, err
	}
	if err := missing(map[string]*string{"encrypted_project_id": in.EncryptedProjectID, "query_id": in.QueryID,
		"query_name": in.QueryName, "query": in.Query, "trust_id": in.TrustID},
		"encrypted_project_id", "query_id", "query_name", "query", "trust_id"); err != nil {
		return StatisticsResponse{}, err
	}
	hash := logging.QueryHash(*in.Query)
	log := httpx.LoggerFrom(ctx).With("query_hash", hash, "query_id", *in.QueryID)
	suppressed := StatisticsResponse{QueryID: *in.QueryID, TrustID: *in.TrustID, Created: a.o.Now().UTC().Format("2006-01-02"),
		RecordCount: disclosure.Suppressed, Data: []cohort.ReleasedChart{}}

	safe, err := a.check(ctx, *in.Query)
	if err != nil {
		return StatisticsResponse{}, err
	}
	projectID := ""
	if a.o.Policy.ScopesProjects(policy.Statistics) {
		if projectID, err = a.openProjectID(*in.EncryptedProjectID); err != nil {
			return StatisticsResponse{}, err
		}
	}
	d := a.decide(ctx, policy.Statistics, projectID)
	if !d.Permit {
		return suppressed, nil
	}
	start := time.Now()
	st, _, err := a.o.Engine.Statistics(ctx, safe, hash)
	if err != nil {
		return StatisticsResponse{}, err
	}
	if st == nil {
		log.Warn("cohort statistics suppressed: the query exposes neither person_id nor accession_id")
		return suppressed, nil
	}
	if st.Subjects < int64(d.EffectiveThreshold) {
		log.Info("cohort statistics suppressed below the disclosure floor", "elapsed_ms", time.Since(start).Milliseconds())
		if st.Subjects == 0 {
			a.vocabularyDiagnostic(ctx)
		}
		return suppressed, nil
	}
	log.Info("cohort statistics computed", "elapsed_ms", time.Since(start).Milliseconds())
	p, err := a.disclosurePolicy(d)
	if err != nil {
		return StatisticsResponse{}, err
	}
	return StatisticsResponse{
		QueryID: *in.QueryID, TrustID: *in.TrustID, RecordCount: p.Cell(disclosure.Subjects(st.Subjects)),
		Created: suppressed.Created, Data: st.Release(p),
	}, nil
}

// vocabularyDiagnostic logs the usual cause of empty concept-joined cohorts:
// no vocabulary loaded. It never changes the answer.
func (a *API) vocabularyDiagnostic(ctx context.Context) {
	loaded, err := a.o.Engine.VocabularyLoaded(ctx)
	if err != nil || loaded {
		return
	}
	httpx.LoggerFrom(ctx).Error("cohort returned no subjects and omop.concept_ancestor is empty: the OMOP vocabulary " +
		"is not loaded, so queries joining concepts find nothing; load the vocabulary into the OMOP database")
}

// DataframeQuery is the body of /cohort/dataframe and /cohort/accession-ids.
type DataframeQuery struct {
	EncryptedProjectID *string `json:"encrypted_project_id"`
	Query              *string `json:"query"`
}

// SnapshotResponse describes a frozen cohort (aggregates only).
type SnapshotResponse struct {
	RowCount      int64    `json:"row_count"`
	Columns       []string `json:"columns"`
	HasAccessions bool     `json:"has_accessions"`
	SnapshotAt    string   `json:"snapshot_at"`
	QueryHash     string   `json:"query_hash"`
}

func snapshotResponse(m *snapshot.Meta) SnapshotResponse {
	cols := m.Columns
	if cols == nil {
		cols = []string{}
	}
	return SnapshotResponse{RowCount: m.RowCount, Columns: cols, HasAccessions: m.HasAccessionIDs && m.AccessionCount > 0,
		SnapshotAt: m.CreatedAt.UTC().Format(time.RFC3339), QueryHash: m.QueryHash}
}

// projectFor decrypts and canonicalises the project id of a snapshot route.
func (a *API) projectFor(enc *string) (string, error) {
	if enc == nil {
		return "", httpx.NewError(http.StatusUnprocessableEntity, "Field required: encrypted_project_id")
	}
	return a.openProjectID(*enc)
}

// createSnapshot serves POST /cohort/snapshot: freeze the approved cohort's
// membership, write-once.
func (a *API) createSnapshot(r *http.Request) (SnapshotResponse, error) {
	ctx := r.Context()
	var in DataframeQuery
	if err := httpx.DecodeJSON(r, &in); err != nil {
		return SnapshotResponse{}, err
	}
	if err := missing(map[string]*string{"encrypted_project_id": in.EncryptedProjectID, "query": in.Query},
		"encrypted_project_id", "query"); err != nil {
		return SnapshotResponse{}, err
	}
	if !a.o.Store.Enabled() {
		return SnapshotResponse{}, httpx.NewError(http.StatusServiceUnavailable, DetailStoreDisabled)
	}
	raw, err := a.projectFor(in.EncryptedProjectID)
	if err != nil {
		return SnapshotResponse{}, err
	}
	pid, ok := snapshot.CanonicalID(raw)
	if !ok {
		return SnapshotResponse{}, httpx.NewError(http.StatusBadRequest, DetailInvalidUUID)
	}
	hash := snapshot.QueryHash(*in.Query)
	log := httpx.LoggerFrom(ctx).With("project_id", pid, "query_hash", logging.QueryHash(*in.Query))
	d := a.decide(ctx, policy.Statistics, pid)
	if !d.Permit {
		return SnapshotResponse{}, httpx.NewError(http.StatusForbidden, DetailBelowThreshold)
	}
	existing, err := a.o.Store.Meta(pid)
	if err != nil {
		log.Error("cohort snapshot store read failed", "error", err.Error())
		return SnapshotResponse{}, httpx.NewError(http.StatusInternalServerError, DetailStoreRead)
	}
	if existing != nil {
		if existing.QueryHash != hash {
			log.Warn("cohort snapshot already exists with another query; kept the frozen membership")
		}
		return snapshotResponse(existing), nil
	}
	safe, err := a.check(ctx, *in.Query)
	if err != nil {
		return SnapshotResponse{}, err
	}
	shape, err := a.o.Engine.Describe(ctx, safe, hash)
	if err != nil {
		return SnapshotResponse{}, err
	}
	if !shape.Countable() {
		return SnapshotResponse{}, httpx.NewError(http.StatusBadRequest, DetailUncountable)
	}
	cols := make([]string, len(shape.Columns))
	for i, c := range shape.Columns {
		cols[i] = c.Name
	}
	var stored snapshot.Meta
	err = a.o.Engine.Freeze(ctx, safe, shape, hash, func(c cohort.Counts, persons, accessions cohort.IDs) error {
		if c.Subjects < int64(d.EffectiveThreshold) {
			return httpx.NewError(http.StatusForbidden, DetailBelowThreshold)
		}
		m, err := a.o.Store.Create(pid, snapshot.Meta{Query: *in.Query, QueryHash: hash, RowCount: c.Rows,
			SubjectCount: c.Subjects, Columns: cols, CreatedAt: a.o.Now().UTC()}, persons, accessions)
		stored = m
		return err
	})
	switch {
	case err == nil:
		log.Info("cohort snapshot frozen", "subjects", stored.SubjectCount)
		return snapshotResponse(&stored), nil
	case errors.Is(err, snapshot.ErrExists):
		winner, rerr := a.o.Store.Meta(pid)
		if rerr != nil || winner == nil {
			return SnapshotResponse{}, httpx.NewError(http.StatusInternalServerError, DetailPersistFailed)
		}
		return snapshotResponse(winner), nil
	case errors.Is(err, snapshot.ErrTooLarge):
		return SnapshotResponse{}, httpx.NewError(http.StatusRequestEntityTooLarge, DetailTooLarge)
	}
	var he *httpx.Error
	if errors.As(err, &he) {
		return SnapshotResponse{}, he
	}
	log.Error("cohort snapshot persistence failed", "error", err.Error())
	return SnapshotResponse{}, httpx.NewError(http.StatusInternalServerError, DetailPersistFailed)
}

// DeleteResponse is POST /cohort/snapshot/delete's body.
type DeleteResponse struct {
	Deleted bool `json:"deleted"`
}

func (a *API) deleteSnapshot(r *http.Request) (DeleteResponse, error) {
	var in struct {
		EncryptedProjectID *string `json:"encrypted_project_id"`
	}
	if err := httpx.DecodeJSON(r, &in); err != nil {
		return DeleteResponse{}, err
	}
	raw, err := a.projectFor(in.EncryptedProjectID)
	if err != nil {
		return DeleteResponse{}, err
	}
	pid, ok := snapshot.CanonicalID(raw)
	if !ok || !a.o.Store.Enabled() {
		return DeleteResponse{Deleted: false}, nil
	}
	deleted, err := a.o.Store.Delete(pid)
	if err != nil {
		httpx.LoggerFrom(r.Context()).Error("cohort snapshot delete failed", "project_id", pid, "error", err.Error())
		return DeleteResponse{}, httpx.NewError(http.StatusInternalServerError, "Snapshot deletion failed.")
	}
	return DeleteResponse{Deleted: deleted}, nil
}

// frozen opens the project id of a row-level route, applies the policy for
// action and returns the project's frozen cohort, or the refusal.
func (a *API) frozen(ctx context.Context, in DataframeQuery, action policy.Action) (string, *snapshot.Meta, policy.Decision, error) {
	raw, err := a.projectFor(in.EncryptedProjectID)
	if err != nil {
		return "", nil, policy.Decision{}, err
	}
	d := a.decide(ctx, action, raw)
	if !d.Permit {
		return "", nil, d, httpx.NewError(http.StatusForbidden, DetailBelowThreshold)
	}
	pid, ok := snapshot.CanonicalID(raw)
	if !ok || !a.o.Store.Enabled() {
		return "", nil, d, httpx.NewError(http.StatusForbidden, DetailNoSnapshot)
	}
	m, err := a.o.Store.Meta(pid)
	if err != nil {
		httpx.LoggerFrom(ctx).Error("cohort snapshot unreadable", "project_id", pid, "error", err.Error())
	}
	if err != nil || m == nil {
		return "", nil, d, httpx.NewError(http.StatusForbidden, DetailNoSnapshot)
	}
	if in.Query != nil && snapshot.QueryHash(*in.Query) != m.QueryHash {
		httpx.LoggerFrom(ctx).Warn("client query differs from the frozen cohort's; serving the frozen cohort", "project_id", pid)
	}
	return pid, m, d, nil
}

// AccessionIDsResponse is POST /cohort/accession-ids' body.
type AccessionIDsResponse struct {
	AccessionIDs []string `json:"accession_ids"`
}

// accessionIDs serves the frozen cohort's imaging accessions that exist in
// image_occurrence; no cohort SQL runs.
func (a *API) accessionIDs(r *http.Request) (AccessionIDsResponse, error) {
	ctx := r.Context()
	var in DataframeQuery
	if err := httpx.DecodeJSON(r, &in); err != nil {
		return AccessionIDsResponse{}, err
	}
	pid, m, d, err := a.frozen(ctx, in, policy.AccessionIDs)
	if err != nil {
		return AccessionIDsResponse{}, err
	}
	floor := int64(d.EffectiveThreshold)
	if !m.HasAccessionIDs || m.AccessionCount == 0 {
		if m.SubjectCount < floor {
			return AccessionIDsResponse{}, httpx.NewError(http.StatusForbidden, DetailBelowThreshold)
		}
		return AccessionIDsResponse{AccessionIDs: []string{}}, nil
	}
	ids := make([]string, 0, m.AccessionCount)
	if err := a.o.Store.IDs(pid, snapshot.Accessions, func(id string) error { ids = append(ids, id); return nil }); err != nil {
		httpx.LoggerFrom(ctx).Error("cohort snapshot unreadable", "project_id", pid, "error", err.Error())
		return AccessionIDsResponse{}, httpx.NewError(http.StatusForbidden, DetailNoSnapshot)
	}
	kept, subjects, err := a.o.Engine.ImagingAccessions(ctx, ids)
	if err != nil {
		var he *httpx.Error
		if errors.As(err, &he) && he.Status == http.StatusServiceUnavailable {
			return AccessionIDsResponse{}, he
		}
		kept, subjects = nil, 0
	}
	if subjects < floor {
		return AccessionIDsResponse{}, httpx.NewError(http.StatusForbidden, DetailBelowThreshold)
	}
	if kept == nil {
		kept = []string{}
	}
	return AccessionIDsResponse{AccessionIDs: kept}, nil
}
