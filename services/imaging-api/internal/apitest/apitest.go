// Package apitest holds what the route tests of both backends share: a
// client that calls the routes with the trust-internal key, and a
// data-access-api stand-in releasing a cohort's accession ids over the mesh.
package apitest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/flip-trust/node/services/imaging-api/internal/api"
	"github.com/flip-trust/node/services/imaging-api/internal/cohortids"
	"github.com/flip-trust/node/services/imaging-api/internal/imagecache"
	"github.com/flip-trust/node/shared/disclosure"
	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/httpx"
	"github.com/flip-trust/node/shared/logging"
	"github.com/flip-trust/node/shared/mesh"
)

// Client calls the routes at URL with Key in FLIP's header.
type Client struct {
	T        testing.TB
	URL, Key string
}

// Do sends body as JSON, decodes a 2xx answer into out (if not nil), logs
// other answers, and returns the status.
func (c Client) Do(method, path string, body, out any) int {
	c.T.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			c.T.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.URL+path, rd)
	if err != nil {
		c.T.Fatal(err)
	}
	req.Header.Set(mesh.HeaderInternalKey, c.Key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.T.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			c.T.Fatalf("%s %s: %s: %v", method, path, raw, err)
		}
	}
	if resp.StatusCode >= 300 {
		c.T.Logf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode
}

// CohortServer stands in for data-access-api's POST /cohort/accession-ids:
// it checks the mesh credential (key) and that the request names hubID
// (sealed with cipher), then answers release(): the accession ids with
// status 200, or another status alone (403: the cohort is below the floor).
func CohortServer(t testing.TB, key string, cipher *envelope.Cipher, hubID string, release func() ([]string, int)) *httptest.Server {
	srv := httptest.NewServer(mesh.NewVerifier("data-access-api", []byte(key), mesh.HeaderInternalKey, logging.Discard()).
		Require("imaging-api")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in map[string]string
		_ = json.NewDecoder(r.Body).Decode(&in)
		if pid, err := cipher.Open(in["encrypted_project_id"], envelope.ProjectIDContext); err != nil || string(pid) != hubID {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		ids, status := release()
		if status != http.StatusOK {
			w.WriteHeader(status)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"accession_ids": ids})
	})))
	t.Cleanup(srv.Close)
	return srv
}

// Identities the route tests share.
const (
	Key     = "internal-service-key-0123456789abcdef0123"
	AESKey  = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	HubID   = "9a3e8f1c-2b4d-4c6e-8f00-1a2b3c4d5e6f"
	TrustID = "5b0c8e4a-1d2f-4e3a-9b7c-6d5e4f3a2b1c"
)

// Serve mounts the routes over backend, with reimport enabled, Key as the
// mesh credential and cohortsURL as data-access-api, on a test server that
// ends with the test; it returns the API and the server's URL.
func Serve(t testing.TB, backend api.Backend, cohortsURL string, cache *imagecache.Cache, cipher *envelope.Cipher) (*api.API, string) {
	srv := httpx.NewServer(httpx.DefaultConfig(":0"), nil, nil, nil)
	a := api.New(api.Options{
		Backend:         backend,
		Cohorts:         cohortids.New(cohortsURL, cipher, mesh.NewSigner("imaging-api", []byte(Key)), mesh.ModeJWT, mesh.HeaderInternalKey),
		Cache:           cache,
		Cipher:          cipher,
		ReimportEnabled: true,
		// A floor of 1: the route tests follow imports of a few studies;
		// the disclosure of status counts has its own tests.
		Disclosure: disclosure.MustPolicy(1, 0, 0),
		Verifier:   mesh.NewVerifier("imaging-api", []byte(Key), mesh.HeaderInternalKey, logging.Discard()),
	})
	a.Mount(srv.Router())
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return a, hs.URL
}
