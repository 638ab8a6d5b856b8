// Package orthanc is the REST client imaging-api uses to drive its STAGING
// Orthanc: check the PACS with C-ECHO, find studies on the PACS by accession
// number with C-FIND, pull them into staging with C-MOVE, look studies up in
// staging, count their instances, download them (as zip archives, or series
// by series and instance by instance) and delete them.
//
// The staging Orthanc talks DICOM to the PACS on the client's behalf; the
// client only speaks HTTP (with basic authentication) to staging. Failures
// are *Error values classified by kind: PACS unreachable, PACS failure,
// authentication, not found, staging unavailable, invalid argument.
package orthanc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/flip-trust/node/shared/httpx"
)

// Defaults of Config.
const (
	DefaultTimeout       = 30 * time.Second
	DefaultDIMSETimeout  = 10 * time.Second
	DefaultMoveTimeout   = 30 * time.Minute
	DefaultArchiveHeader = 5 * time.Minute
	maxErrorBody         = 64 << 10
	maxJSONBody          = 64 << 20
)

// Config configures a Client.
type Config struct {
	// URL is the staging Orthanc's REST base URL, e.g. http://127.0.0.1:8042.
	URL string
	// User and Password are sent with HTTP basic authentication when User
	// is set.
	User, Password string
	// Timeout bounds each ordinary REST request (default 30 s).
	Timeout time.Duration
	// DIMSETimeout is the timeout staging applies to each DICOM message
	// exchanged with the PACS for C-ECHO, C-FIND and C-MOVE (default 10 s,
	// whole seconds). A silent PACS fails after about this long.
	DIMSETimeout time.Duration
	// MoveTimeout bounds a whole C-MOVE request (default 30 min).
	MoveTimeout time.Duration
	// ArchiveHeaderTimeout bounds the wait for an archive download to start
	// (default 5 min); the transfer itself is bounded by the caller's context.
	ArchiveHeaderTimeout time.Duration
}

// Client drives one staging Orthanc. It is safe for concurrent use.
type Client struct {
	base           string
	user, password string
	dimseSeconds   int
	http           *http.Client
	move           *http.Client
	archive        *http.Client
}

// New returns a client for the staging Orthanc at cfg.URL.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("orthanc: URL %q is not an http(s) URL: %w", cfg.URL, ErrInvalid)
	}
	cfg.Timeout = orDuration(cfg.Timeout, DefaultTimeout)
	cfg.DIMSETimeout = orDuration(cfg.DIMSETimeout, DefaultDIMSETimeout)
	cfg.MoveTimeout = orDuration(cfg.MoveTimeout, DefaultMoveTimeout)
	cfg.ArchiveHeaderTimeout = orDuration(cfg.ArchiveHeaderTimeout, DefaultArchiveHeader)
	archive := httpx.NewClient(cfg.ArchiveHeaderTimeout)
	archive.Timeout = 0 // the transport still bounds the wait for the answer's headers
	dimse := max(int((cfg.DIMSETimeout+time.Second-1)/time.Second), 1)
	c := &Client{
		base:         strings.TrimRight(u.String(), "/"),
		user:         cfg.User,
		password:     cfg.Password,
		dimseSeconds: dimse,
		// Orthanc answers a DIMSE call only after its own timeout.
		http:    httpx.NewClient(max(cfg.Timeout, cfg.DIMSETimeout+5*time.Second)),
		move:    httpx.NewClient(cfg.MoveTimeout),
		archive: archive,
	}
	// Orthanc gzips every answer (JSON, and DICOM files too) for a client
	// that accepts it, and Go's clients accept it unless told otherwise.
	// Staging sits next to imaging-api: compressing costs CPU on both ends
	// and saves nothing worth it.
	for _, hc := range []*http.Client{c.http, c.move, c.archive} {
		if t, ok := hc.Transport.(*http.Transport); ok {
			t.DisableCompression = true
		}
	}
	return c, nil
}

func orDuration(v, d time.Duration) time.Duration {
	if v <= 0 {
		return d
	}
	return v
}

// System is the part of GET /system the client reports.
type System struct {
	Name, DicomAet, Version string
	DicomPort               int
}

// System returns the staging Orthanc's identity: a cheap check that it is
// up and accepts the credentials.
func (c *Client) System(ctx context.Context) (System, error) {
	var s System
	err := c.doJSON(ctx, c.http, "system", http.MethodGet, "/system", nil, &s, false)
	return s, err
}

// Echo asks staging to C-ECHO the modality it knows by name (its
// DicomModalities entry, e.g. "PACS").
func (c *Client) Echo(ctx context.Context, modality string) error {
	if err := checkName("echo", modality); err != nil {
		return err
	}
	body := map[string]any{"Timeout": c.dimseSeconds}
	return c.doJSON(ctx, c.http, "echo", http.MethodPost, "/modalities/"+url.PathEscape(modality)+"/echo", body, nil, true)
}

// StudyMatch is one study-level C-FIND answer.
type StudyMatch struct {
	StudyInstanceUID, AccessionNumber, PatientID, StudyDate string
	// ModalitiesInStudy is backslash-separated, as DICOM sends it; empty
	// when the PACS does not report it.
	ModalitiesInStudy string
	// Instances is NumberOfStudyRelatedInstances; 0 when the PACS does not
	// report it.
	Instances int
}

// FindStudies runs a study-level C-FIND on the modality for an accession
// number. PACS matching may ignore case (Orthanc's does), so answers can
// carry other accession numbers: pick with SelectExact. Accession numbers
// with DICOM wildcard characters (* ?) or backslashes are rejected.
func (c *Client) FindStudies(ctx context.Context, modality, accession string) ([]StudyMatch, error) {
	const op = "find studies"
	if err := checkName(op, modality); err != nil {
		return nil, err
	}
	if err := checkMatchValue(op, "accession number", accession, 16); err != nil {
		return nil, err
	}
	q := map[string]any{
		"Level": "Study",
		"Query": map[string]string{
			"AccessionNumber": accession, "StudyInstanceUID": "", "PatientID": "", "StudyDate": "",
			"ModalitiesInStudy": "", "NumberOfStudyRelatedInstances": "",
		},
		"Timeout": c.dimseSeconds,
	}
	var created struct{ ID string }
	if err := c.doJSON(ctx, c.http, op, http.MethodPost, "/modalities/"+url.PathEscape(modality)+"/query", q, &created, true); err != nil {
		return nil, err
	}
	if !validID(created.ID) {
		return nil, &Error{Op: op, Err: errors.New("staging returned no query ID")}
	}
	// Query handles live in staging's memory until evicted; drop ours.
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = c.doJSON(ctx, c.http, op, http.MethodDelete, "/queries/"+created.ID, nil, nil, false)
	}()
	var answers []map[string]any
	if err := c.doJSON(ctx, c.http, op, http.MethodGet, "/queries/"+created.ID+"/answers?expand&simplify", nil, &answers, false); err != nil {
		return nil, err
	}
	out := make([]StudyMatch, 0, len(answers))
	for _, a := range answers {
		m := StudyMatch{
			StudyInstanceUID:  str(a["StudyInstanceUID"]),
			AccessionNumber:   str(a["AccessionNumber"]),
			PatientID:         str(a["PatientID"]),
			StudyDate:         str(a["StudyDate"]),
			ModalitiesInStudy: str(a["ModalitiesInStudy"]),
		}
		_, _ = fmt.Sscan(str(a["NumberOfStudyRelatedInstances"]), &m.Instances)
		if m.StudyInstanceUID != "" {
			out = append(out, m)
		}
	}
	return out, nil
}

// str renders a simplified-tag value (a string, or a sequence rendered as
// JSON that callers here never ask for).
func str(v any) string {
	s, _ := v.(string)
	return strings.TrimSpace(s)
}

// SelectExact keeps the matches whose accession number equals accession
// exactly (case and all).
func SelectExact(matches []StudyMatch, accession string) []StudyMatch {
	var out []StudyMatch
	for _, m := range matches {
		if m.AccessionNumber == accession {
			out = append(out, m)
		}
	}
	return out
}

// MoveStudy asks staging to C-MOVE a study from the modality to targetAET
// (normally staging's own AE title). Orthanc runs the move synchronously:
// it returns once the PACS reports the transfer complete, so every
// instance has been stored by then. Instances staging already holds are
// kept, not duplicated.
func (c *Client) MoveStudy(ctx context.Context, modality, studyUID, targetAET string) error {
	const op = "move study"
	if err := checkName(op, modality); err != nil {
		return err
	}
	if err := checkUID(op, studyUID); err != nil {
		return err
	}
	if err := checkMatchValue(op, "target AE title", targetAET, 16); err != nil {
		return err
	}
	body := map[string]any{
		"Level":     "Study",
		"Resources": []map[string]string{{"StudyInstanceUID": studyUID}},
		"TargetAet": targetAET,
		"Timeout":   c.dimseSeconds,
	}
	return c.doJSON(ctx, c.move, op, http.MethodPost, "/modalities/"+url.PathEscape(modality)+"/move", body, nil, true)
}

// LocalStudy is a study stored in staging.
type LocalStudy struct {
	// ID is Orthanc's identifier of the study.
	ID                                                 string
	StudyInstanceUID, AccessionNumber, PatientID, Date string
	// Series is the number of series.
	Series int
	// IsStable is Orthanc's flag that nothing arrived for StableAge seconds.
	IsStable bool
	// LastUpdate is Orthanc's time of the last change (its local time, as
	// YYYYMMDDTHHMMSS).
	LastUpdate string
}

type expandedStudy struct {
	ID                   string
	IsStable             bool
	LastUpdate           string
	Series               []string
	MainDicomTags        map[string]string
	PatientMainDicomTags map[string]string
}

func (s expandedStudy) local() LocalStudy {
	return LocalStudy{
		ID: s.ID, StudyInstanceUID: s.MainDicomTags["StudyInstanceUID"],
		AccessionNumber: s.MainDicomTags["AccessionNumber"], Date: s.MainDicomTags["StudyDate"],
		PatientID: s.PatientMainDicomTags["PatientID"], Series: len(s.Series),
		IsStable: s.IsStable, LastUpdate: s.LastUpdate,
	}
}

func (c *Client) findLocal(ctx context.Context, op, key, value string) ([]LocalStudy, error) {
	// Orthanc's local matching ignores case unless told otherwise; the
	// answers are filtered for exact equality all the same.
	body := map[string]any{"Level": "Study", "Expand": true, "CaseSensitive": true, "Query": map[string]string{key: value}}
	var found []expandedStudy
	if err := c.doJSON(ctx, c.http, op, http.MethodPost, "/tools/find", body, &found, false); err != nil {
		return nil, err
	}
	out := make([]LocalStudy, 0, len(found))
	for _, s := range found {
		if l := s.local(); (key == "AccessionNumber" && l.AccessionNumber == value) ||
			(key == "StudyInstanceUID" && l.StudyInstanceUID == value) {
			out = append(out, l)
		}
	}
	return out, nil
}

// LocalStudiesByAccession returns the studies in staging whose accession
// number equals accession exactly.
func (c *Client) LocalStudiesByAccession(ctx context.Context, accession string) ([]LocalStudy, error) {
	const op = "find local studies"
	if err := checkMatchValue(op, "accession number", accession, 16); err != nil {
		return nil, err
	}
	return c.findLocal(ctx, op, "AccessionNumber", accession)
}

// LocalStudy returns the study in staging with the Study Instance UID;
// ErrNotFound when staging does not hold it.
func (c *Client) LocalStudy(ctx context.Context, studyUID string) (LocalStudy, error) {
	const op = "find local study"
	if err := checkUID(op, studyUID); err != nil {
		return LocalStudy{}, err
	}
	found, err := c.findLocal(ctx, op, "StudyInstanceUID", studyUID)
	if err != nil {
		return LocalStudy{}, err
	}
	if len(found) == 0 {
		return LocalStudy{}, &Error{Op: op, Kind: ErrNotFound}
	}
	return found[0], nil
}

// StudyInstanceCount returns the number of instances staging holds for the
// study with Orthanc ID id.
func (c *Client) StudyInstanceCount(ctx context.Context, id string) (int, error) {
	const op = "count study instances"
	if err := checkID(op, id); err != nil {
		return 0, err
	}
	var st struct{ CountInstances int }
	err := c.doJSON(ctx, c.http, op, http.MethodGet, "/studies/"+id+"/statistics", nil, &st, false)
	return st.CountInstances, err
}

// DeleteStudy removes the study with Orthanc ID id from staging.
func (c *Client) DeleteStudy(ctx context.Context, id string) error {
	const op = "delete study"
	if err := checkID(op, id); err != nil {
		return err
	}
	return c.doJSON(ctx, c.http, op, http.MethodDelete, "/studies/"+id, nil, nil, false)
}

// StudyArchive streams the study with Orthanc ID id as a zip archive of its
// DICOM files (Orthanc's patient/study/series folder layout). The caller
// closes the reader; ctx bounds the whole transfer.
func (c *Client) StudyArchive(ctx context.Context, id string) (io.ReadCloser, error) {
	const op = "download study archive"
	if err := checkID(op, id); err != nil {
		return nil, err
	}
	return c.stream(ctx, op, "/studies/"+id+"/archive")
}

// stream GETs path and returns the body of a 200 answer.
func (c *Client) stream(ctx context.Context, op, path string) (io.ReadCloser, error) {
	resp, err := c.send(ctx, c.archive, op, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return nil, statusError(op, resp.StatusCode, b, false)
	}
	return resp.Body, nil
}

// Series is one series of a study stored in staging.
type Series struct {
	// ID is Orthanc's identifier of the series.
	ID                                                     string
	SeriesInstanceUID, Modality, SeriesDescription, Number string
	// Instances are Orthanc's identifiers of the series' instances, in
	// Orthanc's order (the order of its archives).
	Instances []string
}

// StudySeries returns the series staging holds for the study with Orthanc
// ID id, with their instances, in one request.
func (c *Client) StudySeries(ctx context.Context, id string) ([]Series, error) {
	const op = "list study series"
	if err := checkID(op, id); err != nil {
		return nil, err
	}
	var found []struct {
		ID            string
		MainDicomTags map[string]string
		Instances     []string
	}
	if err := c.doJSON(ctx, c.http, op, http.MethodGet, "/studies/"+id+"/series?expand", nil, &found, false); err != nil {
		return nil, err
	}
	out := make([]Series, 0, len(found))
	for _, f := range found {
		if !validID(f.ID) {
			return nil, &Error{Op: op, Err: errors.New("staging returned a series without a valid ID")}
		}
		for _, inst := range f.Instances {
			if !validID(inst) {
				return nil, &Error{Op: op, Err: errors.New("staging returned an instance without a valid ID")}
			}
		}
		t := f.MainDicomTags
		out = append(out, Series{ID: f.ID, SeriesInstanceUID: t["SeriesInstanceUID"], Modality: t["Modality"],
			SeriesDescription: t["SeriesDescription"], Number: t["SeriesNumber"], Instances: f.Instances})
	}
	return out, nil
}

// InstanceFile streams the DICOM file of the instance with Orthanc ID id,
// as staging stored it. The caller closes the reader; ctx bounds the whole
// transfer.
func (c *Client) InstanceFile(ctx context.Context, id string) (io.ReadCloser, error) {
	const op = "download instance"
	if err := checkID(op, id); err != nil {
		return nil, err
	}
	return c.stream(ctx, op, "/instances/"+id+"/file")
}

// send performs one request; transport failures become *Error values.
func (c *Client) send(ctx context.Context, hc *http.Client, op, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, &Error{Op: op, Err: err}
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, &Error{Op: op, Err: err}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	// Orthanc closes a kept-alive connection after a second without a
	// request (its KeepAliveTimeout), so a request sent on a pooled
	// connection can meet the close and get no answer. Go's transport
	// sends such a request again on a fresh connection only if it is
	// marked idempotent, which every call here is in effect: a repeated
	// C-ECHO or lookup changes nothing, a repeated C-FIND leaves one more
	// query handle for Orthanc to evict, a repeated C-MOVE finds its
	// instances already stored, and a repeated DELETE answers not found,
	// which callers take as done. An empty Idempotency-Key marks the
	// request without sending the header.
	req.Header["Idempotency-Key"] = nil
	if c.user != "" {
		req.SetBasicAuth(c.user, c.password)
	}
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, &Error{Op: op, Err: ctx.Err()}
		}
		return nil, &Error{Op: op, Kind: ErrUnavailable, Err: stripURL(err)}
	}
	return resp, nil
}

// stripURL drops the request URL from a transport error: the message stays
// about the failure, not the resource.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// doJSON sends a request and decodes a 2xx JSON answer into out (unless out
// is nil). dimse marks calls in which staging talks to a remote modality.
func (c *Client) doJSON(ctx context.Context, hc *http.Client, op, method, path string, body, out any, dimse bool) error {
	resp, err := c.send(ctx, hc, op, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return statusError(op, resp.StatusCode, b, dimse)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJSONBody)).Decode(out); err != nil {
		if ctx.Err() != nil {
			return &Error{Op: op, Err: ctx.Err()}
		}
		return &Error{Op: op, HTTPStatus: resp.StatusCode, Err: fmt.Errorf("decode answer: %w", err)}
	}
	return nil
}

// checkName accepts a DicomModalities entry name.
func checkName(op, name string) error {
	if name == "" || len(name) > 64 {
		return &Error{Op: op, Kind: ErrInvalid, Err: errors.New("modality name must have 1..64 characters")}
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return &Error{Op: op, Kind: ErrInvalid, Err: errors.New("modality name has a character other than letters, digits, '-', '_' and '.'")}
		}
	}
	return nil
}

// checkMatchValue accepts a non-empty printable ASCII value without DICOM
// wildcards or value separators, so that it matches only itself.
func checkMatchValue(op, what, v string, max int) error {
	if strings.TrimSpace(v) == "" || len(v) > max {
		return &Error{Op: op, Kind: ErrInvalid, Err: fmt.Errorf("%s must have 1..%d characters", what, max)}
	}
	for _, c := range []byte(v) {
		if c < 0x20 || c > 0x7e || c == '*' || c == '?' || c == '\\' {
			return &Error{Op: op, Kind: ErrInvalid, Err: fmt.Errorf("%s has a wildcard, separator or non-ASCII character", what)}
		}
	}
	return nil
}

// checkUID accepts a DICOM UID (digits and dots, at most 64 characters).
func checkUID(op, uid string) error {
	ok := uid != "" && len(uid) <= 64 && uid[0] != '.' && uid[len(uid)-1] != '.' && !strings.Contains(uid, "..")
	for _, c := range []byte(uid) {
		ok = ok && (c == '.' || c >= '0' && c <= '9')
	}
	if !ok {
		return &Error{Op: op, Kind: ErrInvalid, Err: errors.New("not a DICOM UID")}
	}
	return nil
}

// validID reports whether id looks like an Orthanc identifier (hex digits
// and dashes), which keeps it safe inside a URL path.
func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range []byte(id) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c == '-') {
			return false
		}
	}
	return true
}

func checkID(op, id string) error {
	if !validID(id) {
		return &Error{Op: op, Kind: ErrInvalid, Err: errors.New("not an Orthanc identifier")}
	}
	return nil
}
