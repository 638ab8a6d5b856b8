// Package api serves data-access-api's FLIP-compatible routes: cohort
// statistics, frozen-cohort snapshots, training dataframes and imaging
// accession ids. Every /cohort* route needs the trust-internal credential;
// the snapshot writes also need the cohort-admin proof.
package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/flip-trust/node/services/data-access-api/internal/cohort"
	"github.com/flip-trust/node/services/data-access-api/internal/guard"
	"github.com/flip-trust/node/services/data-access-api/internal/policy"
	"github.com/flip-trust/node/services/data-access-api/internal/snapshot"
	"github.com/flip-trust/node/shared/disclosure"
	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/httpx"
	"github.com/flip-trust/node/shared/logging"
	"github.com/flip-trust/node/shared/mesh"
)

// FLIP's fixed response texts; refusals that must not be told apart share one.
const (
	DetailBelowThreshold = "Cohort is too small for row-level data to be released."
	DetailNoSnapshot     = "No approved cohort snapshot exists for this project."
	DetailUncountable    = "Cohort query must expose the subjects it covers so the disclosure threshold can be applied per subject: add a person_id column to the SELECT list, or an accession_id column for an imaging cohort."
	DetailNotAdmin       = "Not authorised to define the cohort snapshot."
	DetailStoreDisabled  = "Cohort snapshot store is not configured on this trust."
	DetailInvalidUUID    = "Project id is not a valid UUID."
	DetailStoreRead      = "Cohort snapshot store read failed."
	DetailPersistFailed  = "Snapshot persistence failed."
	DetailTooLarge       = "Cohort snapshot exceeds the configured size limit."
	DetailQueryFailed    = "Query execution failed."
	DetailStatsFailed    = "Statistics aggregation failed."
)

// Engine is the database side the routes need (cohort.Engine).
type Engine interface {
	Describe(ctx context.Context, sql, queryHash string) (cohort.Shape, error)
	Statistics(ctx context.Context, q, queryHash string) (*cohort.Stats, cohort.Shape, error)
	Freeze(ctx context.Context, q string, shape cohort.Shape, queryHash string, save func(c cohort.Counts, persons, accessions cohort.IDs) error) error
	Stream(ctx context.Context, q, queryHash string, fn func(fields []FieldDescription, values []any) error) error
	ImagingAccessions(ctx context.Context, ids []string) ([]string, int64, error)
	VocabularyLoaded(ctx context.Context) (bool, error)
}

// Options configure New.
type Options struct {
	Engine    Engine
	Cipher    *envelope.Cipher
	Verifier  *mesh.Verifier
	Policy    *policy.Policy // nil: no policy
	Store     *snapshot.Store
	Threshold int
	// Disclosure is the site's disclosure policy (SITE_POLICY_FILE floor
	// and rounding over COHORT_QUERY_THRESHOLD); the zero value means the
	// threshold without rounding.
	Disclosure disclosure.Policy
	// AESKeyBase64 is the text the cohort-admin proof is derived from.
	AESKeyBase64      string
	CohortAdminHeader string
	Logger            *slog.Logger
	Now               func() time.Time
	// SpoolDir holds dataframe spool files ("" = the system temp dir).
	SpoolDir string
}

// API holds the routes' dependencies.
type API struct {
	o     Options
	proof string
}

// New builds the API.
func New(o Options) *API {
	if o.Logger == nil {
		o.Logger = logging.Discard()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CohortAdminHeader == "" {
		o.CohortAdminHeader = mesh.HeaderCohortAdmin
	}
	a := &API{o: o}
	if o.AESKeyBase64 != "" {
		a.proof = envelope.CohortAdminProof(o.AESKeyBase64)
	}
	return a
}

// Mount registers the routes on r.
func (a *API) Mount(r chi.Router) {
	r.Group(func(r chi.Router) {
		r.Use(a.o.Verifier.Require())
		r.Post("/cohort", httpx.Handle(a.statistics))
		r.Post("/cohort/dataframe", a.dataframe)
		r.Post("/cohort/accession-ids", httpx.Handle(a.accessionIDs))
		r.Group(func(r chi.Router) {
			r.Use(a.requireAdmin)
			r.Post("/cohort/snapshot", httpx.Handle(a.createSnapshot))
			r.Post("/cohort/snapshot/delete", httpx.Handle(a.deleteSnapshot))
		})
	})
}

// requireAdmin checks FLIP's cohort-admin proof: the SHA-256 of the AES key's
// base64 text, which only services holding the key can present.
func (a *API) requireAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := r.Header.Get(a.o.CohortAdminHeader)
		if a.proof == "" || got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(a.proof)) != 1 {
			a.o.Logger.Warn("cohort snapshot write refused: missing or wrong cohort-admin proof", "path", r.URL.Path)
			httpx.WriteJSON(w, http.StatusForbidden, httpx.ErrorBody{Detail: DetailNotAdmin})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// openProjectID decrypts encrypted_project_id with FLIP's error mapping.
func (a *API) openProjectID(enc string) (string, error) {
	pt, err := a.o.Cipher.Open(enc, envelope.ProjectIDContext)
	if err == nil {
		return string(pt), nil
	}
	switch {
	case errors.Is(err, envelope.ErrAuthentication):
		return "", httpx.NewError(http.StatusBadRequest, "encrypted_project_id failed authentication")
	case envelope.Malformed(err):
		return "", httpx.Errorf(http.StatusBadRequest, "encrypted_project_id is not a valid envelope: %s", err.Error())
	}
	return "", httpx.Errorf(http.StatusInternalServerError, "Failed to decrypt encrypted_project_id (%T)", err)
}

// check validates cohort SQL; a refusal is a 400 naming the reason.
func (a *API) check(ctx context.Context, sql string) (string, error) {
	safe, err := guard.Check(sql)
	if err != nil {
		var ref *guard.Refusal
		reason := "Could not validate query."
		if errors.As(err, &ref) {
			reason = ref.Reason
		}
		httpx.LoggerFrom(ctx).Warn("Query validation failed", "query_hash", logging.QueryHash(sql), "reason", reason)
		return "", httpx.NewError(http.StatusBadRequest, reason)
	}
	return safe, nil
}

// decide evaluates the governance policy and logs a denial with its rule.
func (a *API) decide(ctx context.Context, action policy.Action, projectID string) policy.Decision {
	d := policy.Decide(a.o.Policy, action, projectID, a.o.Threshold)
	// The site policy's floor raises every route's threshold.
	d.EffectiveThreshold = max(d.EffectiveThreshold, int(a.o.Disclosure.Floor()))
	if !d.Permit {
		pid := projectID
		if pid == "" {
			pid = "<none>"
		}
		httpx.LoggerFrom(ctx).Warn(fmt.Sprintf("Policy denied %s for project %s", action, pid),
			"rule_id", d.RuleID, "reason", d.Reason)
	}
	return d
}

// disclosurePolicy is the disclosure policy of one decision: the decision's
// threshold (never below the site floor) with the site's rounding.
func (a *API) disclosurePolicy(d policy.Decision) (disclosure.Policy, error) {
	p, err := disclosure.NewPolicy(int64(d.EffectiveThreshold), 0, a.o.Disclosure.Rounding())
	if err != nil {
		return disclosure.Policy{}, fmt.Errorf("disclosure policy: %w", err)
	}
	return p, nil
}

// missing returns a 422 naming the absent fields (FLIP's models require them).
func missing(fields map[string]*string, order ...string) error {
	var absent []string
	for _, name := range order {
		if fields[name] == nil {
			absent = append(absent, name)
		}
	}
	if len(absent) > 0 {
		return httpx.Errorf(http.StatusUnprocessableEntity, "Field required: %s", strings.Join(absent, ", "))
	}
	return nil
}

// FieldDescription describes a result column of a streamed query.
type FieldDescription = pgconn.FieldDescription
