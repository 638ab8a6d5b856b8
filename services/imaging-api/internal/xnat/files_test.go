package xnat_test

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flip-trust/node/services/imaging-api/internal/xnat"
	"github.com/flip-trust/node/services/imaging-api/internal/xnattest"
)

func TestDownloadZipIsStreamed(t *testing.T) {
	f := newFixture(t, xnattest.Options{}, nil, func(c *xnat.Config) { c.Timeout = 200 * time.Millisecond })
	ctx := context.Background()
	if err := f.srv.AddProject(xnattest.Project{ID: "P1"}); err != nil {
		t.Fatal(err)
	}
	first := bytes.Repeat([]byte("FIRST-NIFTI-"), 1000)
	second := bytes.Repeat([]byte{7}, 256<<10)
	subj, _, err := f.srv.AddExperiment("P1", "subj", xnattest.Experiment{Label: "ACC1", Scans: []xnattest.Scan{
		{ID: "1", Resources: map[string]map[string][]byte{"NIFTI": {"a.nii.gz": first}, "DICOM": {"x.dcm": []byte("dcm")}}},
		{ID: "2", Resources: map[string]map[string][]byte{"NIFTI": {"b.nii.gz": second}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	release := f.srv.PauseDownloads()
	defer release()
	d := xnat.Download{Project: "P1", Subject: subj, Experiment: "ACC1", Kind: xnat.KindScans, Resource: "NIFTI"}
	// The server holds the rest of the zip until released: the call must
	// return and the first entry be readable meanwhile, so the client does
	// not buffer the reply.
	type result struct {
		body io.ReadCloser
		got  []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		body, err := f.cl.DownloadZip(ctx, d)
		if err != nil {
			done <- result{err: err}
			return
		}
		got := make([]byte, 0, len(first)+200)
		buf := make([]byte, 4096)
		for !bytes.Contains(got, first) {
			n, err := body.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				done <- result{body: body, err: err}
				return
			}
		}
		done <- result{body: body, got: got}
	}()
	var res result
	select {
	case res = <-done:
	case <-time.After(5 * time.Second):
		release()
		t.Fatal("first entry not readable while the server holds the rest: the download is buffered")
	}
	if res.err != nil {
		t.Fatal(res.err)
	}
	body, got := res.body, res.got
	defer body.Close()
	// Longer than Config.Timeout: a download is bounded by its context only.
	time.Sleep(300 * time.Millisecond)
	release()
	rest, err := io.ReadAll(body)
	if err != nil {
		t.Fatalf("read rest: %v", err)
	}
	all := append(got, rest...)
	zr, err := zip.NewReader(bytes.NewReader(all), int64(len(all)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, zf := range zr.File {
		names = append(names, zf.Name)
	}
	want := "ACC1/scans/1/resources/NIFTI/files/a.nii.gz|ACC1/scans/2/resources/NIFTI/files/b.nii.gz"
	if strings.Join(names, "|") != want {
		t.Errorf("entries %v", names)
	}
	r := f.srv.RequestsTo("GET", "/data/projects/P1/subjects/*")
	if len(r) != 1 || r[0].Path != "/data/projects/P1/subjects/"+subj+"/experiments/ACC1/scans/ALL/resources/NIFTI/files" || r[0].Query != "format=zip" {
		t.Errorf("download request %+v", r)
	}
}

func TestDownloadSelection(t *testing.T) {
	f := newFixture(t, xnattest.Options{}, nil)
	ctx := context.Background()
	if err := f.srv.AddProject(xnattest.Project{ID: "P1"}); err != nil {
		t.Fatal(err)
	}
	subj, _, err := f.srv.AddExperiment("P1", "subj", xnattest.Experiment{Label: "ACC1",
		Scans:     []xnattest.Scan{{ID: "1", Resources: map[string]map[string][]byte{"NIFTI": {"a.nii.gz": []byte("n")}, "DICOM": {"x.dcm": []byte("d")}}}},
		Assessors: []xnattest.Scan{{ID: "seg1", Resources: map[string]map[string][]byte{"SEG": {"s.dcm": []byte("s")}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	entries := func(d xnat.Download) ([]string, error) {
		body, err := f.cl.DownloadZip(ctx, d)
		if err != nil {
			return nil, err
		}
		defer body.Close()
		b, err := io.ReadAll(body)
		if err != nil {
			return nil, err
		}
		zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return nil, err
		}
		var out []string
		for _, zf := range zr.File {
			out = append(out, zf.Name)
		}
		return out, nil
	}
	for _, tc := range []struct {
		name string
		d    xnat.Download
		want string
		err  error
	}{
		{"all resources", xnat.Download{Resource: "all", Kind: xnat.KindScans}, "ACC1/scans/1/resources/DICOM/files/x.dcm|ACC1/scans/1/resources/NIFTI/files/a.nii.gz", nil},
		{"assessor SEG", xnat.Download{Resource: "SEG", Kind: xnat.KindAssessors}, "ACC1/assessors/seg1/resources/SEG/files/s.dcm", nil},
		{"no such resource", xnat.Download{Resource: "SEG", Kind: xnat.KindScans}, "", xnat.ErrNotFound},
		{"unknown experiment", xnat.Download{Resource: "NIFTI", Kind: xnat.KindScans, Experiment: "NOPE"}, "", xnat.ErrNotFound},
		{"bad kind", xnat.Download{Resource: "NIFTI", Kind: "files"}, "", xnat.ErrInvalidSegment},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.d
			d.Project, d.Subject = "P1", subj
			if d.Experiment == "" {
				d.Experiment = "ACC1"
			}
			got, err := entries(d)
			if !errors.Is(err, tc.err) || (tc.err == nil && strings.Join(got, "|") != tc.want) {
				t.Errorf("got %v, %v; want %q, %v", got, err, tc.want, tc.err)
			}
		})
	}
	u, err := f.cl.DownloadURL(xnat.Download{Project: "P1", Subject: subj, Experiment: "ACC1", Kind: xnat.KindScans, Resource: "ALL"})
	if err != nil || u != f.srv.URL+"/data/projects/P1/subjects/"+subj+"/experiments/ACC1/scans/ALL/files?format=zip" {
		t.Errorf("url %q %v", u, err)
	}
}

func TestUploadFiles(t *testing.T) {
	f := newFixture(t, xnattest.Options{}, nil)
	ctx := context.Background()
	if err := f.srv.AddProject(xnattest.Project{ID: "P1"}); err != nil {
		t.Fatal(err)
	}
	subj, _, err := f.srv.AddExperiment("P1", "subj", xnattest.Experiment{Label: "ACC1"})
	if err != nil {
		t.Fatal(err)
	}
	r := xnat.ScanResource{Project: "P1", Subject: subj, Experiment: "ACC1", Scan: "1_2_826", Resource: "NIFTI"}
	if err := f.cl.CreateScan(ctx, r, ""); err != nil {
		t.Fatal(err)
	}
	if q := f.srv.RequestsTo("PUT", "/data/projects/P1/subjects/*"); len(q) != 1 || q[0].Query != "xsiType=xnat%3AmrScanData" {
		t.Errorf("create scan %+v", q)
	}
	if err := f.cl.CreateScan(ctx, r, ""); err != nil {
		t.Errorf("existing scan: %v", err)
	}
	if created, err := f.cl.CreateResource(ctx, r); err != nil || !created {
		t.Errorf("create resource: %v %v", created, err)
	}
	if created, err := f.cl.CreateResource(ctx, r); err != nil || created {
		t.Errorf("existing resource: %v %v", created, err)
	}
	if ok, err := f.cl.FileExists(ctx, r, "label_a.nii.gz"); err != nil || ok {
		t.Errorf("exists before upload: %v %v", ok, err)
	}
	content := bytes.Repeat([]byte("label"), 10000)
	// The session expires just as the upload is sent: the retry after the
	// new login must carry the whole body again.
	f.srv.InjectFault(xnattest.Fault{Method: "PUT", Path: "/data/projects/P1/subjects/*", ExpireSession: true, Times: 1})
	u, err := f.cl.UploadFile(ctx, r, "label_a.nii.gz", bytes.NewReader(content), false)
	if err != nil {
		t.Fatal(err)
	}
	if u != f.srv.URL+"/data/projects/P1/subjects/"+subj+"/experiments/ACC1/scans/1_2_826/resources/NIFTI/files/label_a.nii.gz" {
		t.Errorf("url %q", u)
	}
	if got, ok := f.srv.File("P1", "ACC1", "1_2_826", "NIFTI", "label_a.nii.gz"); !ok || !bytes.Equal(got, content) {
		t.Errorf("stored %d bytes, want %d", len(got), len(content))
	}
	puts := f.srv.RequestsTo("PUT", "/data/projects/P1/subjects/"+subj+"/experiments/ACC1/scans/1_2_826/resources/NIFTI/files/label_a.nii.gz")
	if len(puts) != 2 || puts[0].Status != http.StatusUnauthorized || !bytes.Equal(puts[0].Body, content) || !bytes.Equal(puts[1].Body, content) ||
		puts[1].Query != "inbody=true" || puts[1].ContentLength != int64(len(content)) {
		t.Errorf("upload attempts: %d", len(puts))
	}
	if ok, err := f.cl.FileExists(ctx, r, "label_a.nii.gz"); err != nil || !ok {
		t.Errorf("exists after upload: %v %v", ok, err)
	}
	if _, err := f.cl.UploadFile(ctx, r, "label_a.nii.gz", strings.NewReader("v2"), false); !errors.Is(err, xnat.ErrAlreadyExists) {
		t.Errorf("second upload: %v", err)
	}
	if _, err := f.cl.UploadFile(ctx, r, "label_a.nii.gz", strings.NewReader("v2"), true); err != nil {
		t.Errorf("overwrite: %v", err)
	}
	if got, _ := f.srv.File("P1", "ACC1", "1_2_826", "NIFTI", "label_a.nii.gz"); string(got) != "v2" {
		t.Errorf("after overwrite %q", got)
	}
	if _, err := f.cl.UploadFile(ctx, r, "empty", bytes.NewReader(nil), false); err != nil {
		t.Errorf("empty file: %v", err)
	}
	if _, err := f.cl.UploadFile(ctx, xnat.ScanResource{Project: "P1", Subject: subj, Experiment: "NOPE", Scan: "1", Resource: "R"}, "x",
		strings.NewReader("x"), false); !errors.Is(err, xnat.ErrNotFound) || xnat.StatusCode(err) != http.StatusNotFound {
		t.Errorf("unknown experiment: %v", err)
	}
}
