package cohortids

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/logging"
	"github.com/flip-trust/node/shared/mesh"
)

const key = "internal-service-key-0123456789abcdef0123"

func TestAccessionIDs(t *testing.T) {
	cipher, _ := envelope.NewFromBase64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
	verifier := mesh.NewVerifier(Audience, []byte(key), mesh.HeaderInternalKey, logging.Discard())
	small := false
	srv := httptest.NewServer(verifier.Require("imaging-api")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in map[string]string
		_ = json.NewDecoder(r.Body).Decode(&in)
		pid, err := cipher.Open(in["encrypted_project_id"], envelope.ProjectIDContext)
		if err != nil || string(pid) != "hub-project" || in["query"] != "SELECT 1" || r.URL.Path != "/cohort/accession-ids" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if small {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		_, _ = w.Write([]byte(`{"accession_ids":["A","B","A","C"]}`))
	})))
	defer srv.Close()
	c := New(srv.URL, cipher, mesh.NewSigner("imaging-api", []byte(key)), mesh.ModeJWT, mesh.HeaderInternalKey)
	ids, err := c.AccessionIDs(context.Background(), "hub-project", "SELECT 1")
	if err != nil || !reflect.DeepEqual(ids, []string{"A", "B", "C"}) {
		t.Fatalf("ids %v, %v", ids, err)
	}
	small = true
	if _, err := c.AccessionIDs(context.Background(), "hub-project", "SELECT 1"); !errors.Is(err, ErrBelowThreshold) {
		t.Errorf("403: %v", err)
	}
	bad := New(srv.URL, cipher, mesh.NewSigner("imaging-api", []byte("another-key-0123456789abcdef0123456789")), mesh.ModeJWT, mesh.HeaderInternalKey)
	if _, err := bad.AccessionIDs(context.Background(), "hub-project", "SELECT 1"); err == nil || errors.Is(err, ErrBelowThreshold) {
		t.Errorf("wrong key: %v", err)
	}
}
