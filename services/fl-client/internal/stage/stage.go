// Package stage puts a task's local data into its workspace: the frozen
// cohort's dataframe from data-access-api (POST /cohort/dataframe, as CSV)
// and, when the task asks for images, each released accession from
// imaging-api (POST /download/images/{net_id}) linked under data/images.
//
// Everything goes over the trust's mesh with fl-client's credentials; the
// project id stays the hub's sealed envelope (fl-client never opens it).
// Nothing is logged about the data beyond counts.
package stage

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/flip-trust/node/shared/flproto"
	"github.com/flip-trust/node/shared/mesh"
)

// ErrRefused is data-access-api's or imaging-api's refusal: no approved
// cohort for the project, or one below the trust's floor. The task fails as
// flproto.FailureRefused.
var ErrRefused = errors.New("the trust refused the data")

// Mesh audiences of the services called.
const (
	AudienceData    = "data-access-api"
	AudienceImaging = "imaging-api"
)

// DefaultResource is the imaging resource staged when the task names none.
const DefaultResource = "DICOM"

var accessionID = regexp.MustCompile(`^[A-Za-z0-9._~-]+$`)

// Stager fetches a task's data. It is safe for concurrent use.
type Stager struct {
	DataAccessURL string
	ImagingURL    string
	// ImagesDir is where imaging-api's downloads appear on this host (the
	// shared images volume); returned paths must lie inside it.
	ImagesDir string
	NetID     string
	Signer    *mesh.Signer
	Mode      mesh.AuthMode
	KeyHeader string
	HTTP      *http.Client
}

// Dataframe writes the frozen cohort's rows as CSV to dst (atomically) and
// returns the number of data rows.
func (s *Stager) Dataframe(ctx context.Context, data flproto.DataRef, dst string) (int64, error) {
	body, _ := json.Marshal(map[string]string{"encrypted_project_id": data.EncryptedProjectID, "query": data.Query})
	resp, err := s.post(ctx, s.DataAccessURL+"/cohort/dataframe", AudienceData, body, "text/csv")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if err := answer(resp, "data-access-api"); err != nil {
		return 0, err
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/csv") {
		return 0, fmt.Errorf("data-access-api answered %q, not CSV", ct)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".dataframe-*")
	if err != nil {
		return 0, fmt.Errorf("stage dataframe: %w", err)
	}
	defer os.Remove(tmp.Name())
	lines := &lineCounter{}
	if _, err := io.Copy(io.MultiWriter(tmp, lines), resp.Body); err != nil {
		tmp.Close()
		return 0, fmt.Errorf("stage dataframe: read from data-access-api: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return 0, fmt.Errorf("stage dataframe: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return 0, fmt.Errorf("stage dataframe: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return 0, fmt.Errorf("stage dataframe: %w", err)
	}
	rows := lines.n
	if lines.last != '\n' && lines.any {
		rows++ // a final line without a newline
	}
	if rows > 0 {
		rows-- // the header
	}
	return rows, nil
}

// lineCounter counts newlines in what it is given. CSV fields may hold
// quoted newlines, so the count is an upper bound used for progress only.
type lineCounter struct {
	n    int64
	last byte
	any  bool
}

func (c *lineCounter) Write(p []byte) (int, error) {
	if len(p) > 0 {
		c.n += int64(bytes.Count(p, []byte{'\n'}))
		c.last, c.any = p[len(p)-1], true
	}
	return len(p), nil
}

// Images stages every accession the frozen cohort releases under dstDir
// (data/images/<accession>/...), hard-linking the files imaging-api
// downloaded (copying where links are impossible), and returns how many
// accessions were staged.
func (s *Stager) Images(ctx context.Context, data flproto.DataRef, resource, dstDir string) (int, error) {
	if resource == "" {
		resource = DefaultResource
	}
	ids, err := s.accessionIDs(ctx, data)
	if err != nil {
		return 0, err
	}
	for i, acc := range ids {
		if !accessionID.MatchString(acc) || acc == "." || acc == ".." {
			return i, fmt.Errorf("data-access-api released an accession id that is not a plain name (item %d)", i)
		}
		src, err := s.download(ctx, data, acc, resource)
		if err != nil {
			return i, fmt.Errorf("accession %d of %d: %w", i+1, len(ids), err)
		}
		if err := linkTree(src, filepath.Join(dstDir, acc)); err != nil {
			return i, fmt.Errorf("accession %d of %d: %w", i+1, len(ids), err)
		}
	}
	return len(ids), nil
}

func (s *Stager) accessionIDs(ctx context.Context, data flproto.DataRef) ([]string, error) {
	body, _ := json.Marshal(map[string]string{"encrypted_project_id": data.EncryptedProjectID, "query": data.Query})
	resp, err := s.post(ctx, s.DataAccessURL+"/cohort/accession-ids", AudienceData, body, "application/json")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if err := answer(resp, "data-access-api"); err != nil {
		return nil, err
	}
	var out struct {
		AccessionIDs []string `json:"accession_ids"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 256<<20)).Decode(&out); err != nil {
		return nil, fmt.Errorf("data-access-api: invalid accession-ids answer: %w", err)
	}
	seen := map[string]bool{}
	ids := out.AccessionIDs[:0]
	for _, id := range out.AccessionIDs {
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	return ids, nil
}

func (s *Stager) download(ctx context.Context, data flproto.DataRef, acc, resource string) (string, error) {
	net := data.NetID
	if net == "" {
		net = s.NetID
	}
	body, _ := json.Marshal(map[string]string{"encrypted_central_hub_project_id": data.EncryptedProjectID, "accession_id": acc})
	u := s.ImagingURL + "/download/images/" + url.PathEscape(net) + "?resource_type=" + url.QueryEscape(resource)
	resp, err := s.post(ctx, u, AudienceImaging, body, "application/json")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if err := answer(resp, "imaging-api"); err != nil {
		return "", err
	}
	var out struct {
		Path string `json:"path"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return "", fmt.Errorf("imaging-api: invalid download answer: %w", err)
	}
	return s.inside(out.Path)
}

// inside resolves p and checks it lies within ImagesDir.
func (s *Stager) inside(p string) (string, error) {
	root, err := filepath.EvalSymlinks(s.ImagesDir)
	if err != nil {
		return "", fmt.Errorf("images directory: %w", err)
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("imaging-api's download is not visible here (is IMAGES_DIR the shared images volume?): %w", err)
	}
	if rel, err := filepath.Rel(root, real); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("imaging-api answered a path outside IMAGES_DIR")
	}
	return real, nil
}

// linkTree recreates the regular files under src beneath dst, hard-linked
// where possible. Symbolic links and special files are skipped.
func linkTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o750)
		case !d.Type().IsRegular():
			return nil
		}
		if strings.HasPrefix(d.Name(), ".flip_complete") {
			return nil
		}
		if err := os.Link(p, target); err == nil {
			return nil
		}
		return copyFile(p, target)
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	if _, err := io.Copy(bufio.NewWriterSize(out, 1<<20), in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func (s *Stager) post(ctx context.Context, u, audience string, body []byte, accept string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", accept)
	if err := s.Signer.Apply(req, audience, s.Mode, s.KeyHeader); err != nil {
		return nil, fmt.Errorf("sign request to %s: %w", audience, err)
	}
	resp, err := s.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s unreachable: %w", audience, err)
	}
	return resp, nil
}

// answer maps a service's status to an error; the body's detail is kept
// short and never carries data.
func answer(resp *http.Response, service string) error {
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var p struct {
		Detail any `json:"detail"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&p)
	detail := ""
	if s, ok := p.Detail.(string); ok && len(s) <= 200 {
		detail = ": " + s
	}
	if resp.StatusCode == http.StatusForbidden {
		return fmt.Errorf("%w: %s answered 403%s", ErrRefused, service, detail)
	}
	return fmt.Errorf("%s answered %d%s", service, resp.StatusCode, detail)
}
