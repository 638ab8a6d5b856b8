// Package cohortids asks data-access-api which accession ids a project's
// frozen cohort releases (POST /cohort/accession-ids) over the mesh.
package cohortids

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/httpx"
	"github.com/flip-trust/node/shared/mesh"
)

// ErrBelowThreshold is data-access-api's refusal (403): the cohort is below
// the trust's floor, or no cohort is frozen for the project, so no accession
// id is released.
var ErrBelowThreshold = errors.New("cohort is below the trust's minimum size")

// Audience is the mesh name of data-access-api.
const Audience = "data-access-api"

// Client calls data-access-api.
type Client struct {
	URL       string
	Cipher    *envelope.Cipher
	Signer    *mesh.Signer
	Mode      mesh.AuthMode
	KeyHeader string
	HTTP      *http.Client
}

// New returns a client for the service at url.
func New(url string, cipher *envelope.Cipher, signer *mesh.Signer, mode mesh.AuthMode, keyHeader string) *Client {
	return &Client{URL: url, Cipher: cipher, Signer: signer, Mode: mode, KeyHeader: keyHeader, HTTP: httpx.NewClient(5 * time.Minute)}
}

// AccessionIDs returns the released accession ids of hub project
// hubProjectID's frozen cohort, de-duplicated in their order.
func (c *Client) AccessionIDs(ctx context.Context, hubProjectID, query string) ([]string, error) {
	enc, err := c.Cipher.Seal([]byte(hubProjectID), envelope.ProjectIDContext)
	if err != nil {
		return nil, err
	}
	body, _ := json.Marshal(map[string]string{"encrypted_project_id": enc, "query": query})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL+"/cohort/accession-ids", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if err := c.Signer.Apply(req, Audience, c.Mode, c.KeyHeader); err != nil {
		return nil, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("data-access-api unreachable: %w", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	switch {
	case resp.StatusCode == http.StatusForbidden:
		return nil, ErrBelowThreshold
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("data-access-api answered %d", resp.StatusCode)
	}
	var out struct {
		AccessionIDs []string `json:"accession_ids"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("data-access-api: invalid accession-ids response: %w", err)
	}
	seen := make(map[string]bool, len(out.AccessionIDs))
	ids := make([]string, 0, len(out.AccessionIDs))
	for _, id := range out.AccessionIDs {
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	return ids, nil
}
