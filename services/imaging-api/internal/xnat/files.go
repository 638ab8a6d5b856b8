package xnat

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Kind selects an experiment's scans or assessors.
type Kind string

// Kinds.
const (
	KindScans     Kind = "scans"
	KindAssessors Kind = "assessors"
)

// ResourceAll selects every resource of a download (XNAT has no resource of
// that name; the path leaves the resource out).
const ResourceAll = "ALL"

// Download selects files of an experiment to download as one zip.
type Download struct {
	Project, Subject, Experiment string
	Kind                         Kind
	// Resource is a resource label (NIFTI, DICOM, SEG, ...) or ResourceAll
	// (any case).
	Resource string
}

func (d Download) path() ([]string, error) {
	if d.Kind != KindScans && d.Kind != KindAssessors {
		return nil, fmt.Errorf("xnat download: %w: kind %q", ErrInvalidSegment, d.Kind)
	}
	p := []string{"data", "projects", d.Project, "subjects", d.Subject, "experiments", d.Experiment, string(d.Kind), "ALL"}
	if !strings.EqualFold(d.Resource, ResourceAll) {
		p = append(p, "resources", d.Resource)
	}
	return append(p, "files"), nil
}

// DownloadURL is the XNAT URL of a download (for messages and logs that may
// carry it: it holds the experiment label).
func (cl *Client) DownloadURL(d Download) (string, error) {
	p, err := d.path()
	if err != nil {
		return "", err
	}
	return cl.url(p, url.Values{"format": {"zip"}})
}

// DownloadZip streams the zip of a download. XNAT's zip holds
// <experiment label>/<kind>/<id>/resources/<R>/files/<name> entries. The
// body is not bounded by Config.Timeout, only by ctx; the caller closes it.
// No matching files is ErrNotFound.
func (cl *Client) DownloadZip(ctx context.Context, d Download) (io.ReadCloser, error) {
	p, err := d.path()
	if err != nil {
		return nil, err
	}
	resp, err := cl.do(ctx, call{op: "download", method: http.MethodGet, path: p, query: url.Values{"format": {"zip"}}, stream: true})
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// ScanResource names a resource of a scan.
type ScanResource struct {
	Project, Subject, Experiment, Scan, Resource string
}

func (r ScanResource) scanPath() []string {
	return []string{"data", "projects", r.Project, "subjects", r.Subject, "experiments", r.Experiment, "scans", r.Scan}
}

func (r ScanResource) filePath(name string) []string {
	return append(r.scanPath(), "resources", r.Resource, "files", name)
}

// CreateScan creates the scan of r (xsiType defaults to xnat:mrScanData);
// an existing scan is left as it is.
func (cl *Client) CreateScan(ctx context.Context, r ScanResource, xsiType string) error {
	if xsiType == "" {
		xsiType = "xnat:mrScanData"
	}
	_, err := cl.doJSON(ctx, call{op: "create scan", method: http.MethodPut, path: r.scanPath(),
		query: url.Values{"xsiType": {xsiType}}, ok: []int{http.StatusOK, http.StatusCreated}}, nil)
	return err
}

// CreateResource creates the resource of r; created is false when it
// already existed (XNAT's 409).
func (cl *Client) CreateResource(ctx context.Context, r ScanResource) (created bool, err error) {
	status, err := cl.doJSON(ctx, call{op: "create resource", method: http.MethodPut, path: append(r.scanPath(), "resources", r.Resource),
		ok: []int{http.StatusOK, http.StatusCreated, http.StatusConflict}}, nil)
	if err != nil {
		return false, err
	}
	return status != http.StatusConflict, nil
}

// FileExists reports whether the resource of r holds a file called name.
func (cl *Client) FileExists(ctx context.Context, r ScanResource, name string) (bool, error) {
	status, err := cl.doJSON(ctx, call{op: "file exists", method: http.MethodGet, path: r.filePath(name),
		query: url.Values{"inbody": {"true"}}, ok: []int{http.StatusOK, http.StatusNotFound}}, nil)
	if err != nil {
		return false, err
	}
	return status == http.StatusOK, nil
}

// UploadFile stores body as the file name of r's resource and returns the
// file's XNAT URL. body is read from its start (again, if the call is
// retried after a new login). An existing file is ErrAlreadyExists unless
// overwrite.
func (cl *Client) UploadFile(ctx context.Context, r ScanResource, name string, body io.ReadSeeker, overwrite bool) (string, error) {
	q := url.Values{"inbody": {"true"}}
	if overwrite {
		q.Set("overwrite", "true")
	}
	p := r.filePath(name)
	if _, err := cl.doJSON(ctx, call{op: "upload file", method: http.MethodPut, path: p, query: q, reader: body,
		contentType: "application/octet-stream", ok: []int{http.StatusOK, http.StatusCreated}}, nil); err != nil {
		return "", err
	}
	return cl.url(p, nil)
}
