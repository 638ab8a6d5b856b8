package orthanctest_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/flip-trust/node/services/imaging-api/internal/dicomgen"
	"github.com/flip-trust/node/services/imaging-api/internal/orthanctest"
)

func startPair(t *testing.T) *orthanctest.Pair {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	p, err := orthanctest.StartPair(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func status(t *testing.T, url, user, password string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// The two servers run with the advertised identities and credentials, only
// accept their own credentials and reach each other over DICOM.
func TestPairConfiguration(t *testing.T) {
	p := startPair(t)
	ctx := t.Context()
	ports := map[int]bool{}
	for _, s := range []*orthanctest.Server{p.PACS, p.Staging} {
		ports[s.HTTPPort], ports[s.DICOMPort] = true, true
		var sys struct {
			Name, DicomAet      string
			DicomPort, HttpPort int
		}
		if err := s.Do(ctx, http.MethodGet, "/system", nil, &sys); err != nil {
			t.Fatal(err)
		}
		if sys.Name != s.Name || sys.DicomAet != s.AET || sys.DicomPort != s.DICOMPort || sys.HttpPort != s.HTTPPort {
			t.Errorf("%s: /system says %+v; want name and AET %s, ports %d/%d", s.Name, sys, s.AET, s.HTTPPort, s.DICOMPort)
		}
	}
	if len(ports) != 4 {
		t.Errorf("ports are not distinct: %v", ports)
	}
	if p.PACS.AET != "PACS" || p.Staging.AET != "STAGING" {
		t.Errorf("AETs %q and %q", p.PACS.AET, p.Staging.AET)
	}

	auth := []struct {
		name           string
		server         *orthanctest.Server
		user, password string
		want           int
	}{
		{"pacs own credentials", p.PACS, p.PACS.User, p.PACS.Password, http.StatusOK},
		{"pacs no credentials", p.PACS, "", "", http.StatusUnauthorized},
		{"pacs staging credentials", p.PACS, p.Staging.User, p.Staging.Password, http.StatusUnauthorized},
		{"staging own credentials", p.Staging, p.Staging.User, p.Staging.Password, http.StatusOK},
		{"staging no credentials", p.Staging, "", "", http.StatusUnauthorized},
		{"staging wrong password", p.Staging, p.Staging.User, "nope", http.StatusUnauthorized},
	}
	for _, c := range auth {
		if got := status(t, c.server.URL+"/studies", c.user, c.password); got != c.want {
			t.Errorf("%s: status %d, want %d", c.name, got, c.want)
		}
	}

	if err := p.Staging.Do(ctx, http.MethodPost, "/modalities/PACS/echo", map[string]any{}, nil); err != nil {
		t.Errorf("staging cannot echo the PACS: %v", err)
	}
	if err := p.PACS.Do(ctx, http.MethodPost, "/modalities/STAGING/echo", map[string]any{}, nil); err != nil {
		t.Errorf("the PACS cannot echo staging: %v", err)
	}
}

// The DICOM ports check the called AE title and only serve the listed
// calling AE title (checked with dcmtk's echoscu).
func TestDICOMAccessControl(t *testing.T) {
	echoscu, err := exec.LookPath("echoscu")
	if err != nil {
		t.Fatalf("echoscu not found (install dcmtk: make deps): %v", err)
	}
	p := startPair(t)
	cases := []struct {
		calling, called string
		ok              bool
	}{
		{"STAGING", "PACS", true},
		{"STAGING", "WRONG", false},
		{"INTRUDER", "PACS", false},
	}
	for _, c := range cases {
		cmd := exec.CommandContext(t.Context(), echoscu, "-to", "5", "-aet", c.calling, "-aec", c.called,
			"127.0.0.1", strconv.Itoa(p.PACS.DICOMPort))
		cmd.Env = append(os.Environ(), "TCP_NODELAY=1")
		out, err := cmd.CombinedOutput()
		if (err == nil) != c.ok {
			t.Errorf("echo %s -> %s: error %v, want success %v; output: %s", c.calling, c.called, err, c.ok, out)
		}
	}
}

// A killed server comes back on the same ports with the same content, and
// C-MOVE works again afterwards; a gracefully stopped one too. Moves are
// fast because the servers run with TCP_NODELAY.
func TestKillAndRestartKeepStorage(t *testing.T) {
	p := startPair(t)
	ctx := t.Context()
	study := dicomgen.Study{PatientID: "P1", AccessionNumber: "ACC1", Modality: "CT", Series: 3, PerSeries: 10}
	up := &dicomgen.Uploader{URL: p.PACS.URL, User: p.PACS.User, Password: p.PACS.Password}
	studies := func(yield func(dicomgen.Study) bool) { yield(study) }
	if _, err := up.UploadStudies(ctx, studies, 4, nil); err != nil {
		t.Fatal(err)
	}

	p.PACS.Kill()
	if p.PACS.Running() {
		t.Fatal("PACS still running after Kill")
	}
	if _, err := http.Get(p.PACS.URL + "/system"); err == nil {
		t.Fatal("killed PACS still answers")
	}
	err := p.Staging.Do(ctx, http.MethodPost, "/modalities/PACS/echo", map[string]any{}, nil)
	if err == nil {
		t.Fatal("echo to a killed PACS succeeded")
	}
	if err := p.PACS.Start(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := p.PACS.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.CountStudies != 1 || st.CountInstances != 30 {
		t.Fatalf("after restart the PACS holds %+v, want 1 study of 30 instances", st)
	}

	begin := time.Now()
	move := map[string]any{"Level": "Study", "TargetAet": "STAGING",
		"Resources": []map[string]string{{"StudyInstanceUID": dicomgen.StudyUIDFor("P1", "ACC1")}}}
	if err := p.Staging.Do(ctx, http.MethodPost, "/modalities/PACS/move", move, nil); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(begin)
	if st, err = p.Staging.Stats(ctx); err != nil || st.CountInstances != 30 {
		t.Fatalf("staging holds %+v (%v), want 30 instances", st, err)
	}
	// Without TCP_NODELAY every C-STORE waits about 90 ms: 30 take ~2.8 s.
	if elapsed > 1500*time.Millisecond {
		t.Errorf("C-MOVE of 30 instances took %v; is TCP_NODELAY set?", elapsed)
	}

	if err := p.Staging.Stop(); err != nil {
		t.Fatal(err)
	}
	if p.Staging.Running() {
		t.Fatal("staging still running after Stop")
	}
	if err := p.Staging.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err = p.Staging.Stats(ctx); err != nil || st.CountInstances != 30 {
		t.Fatalf("after a restart staging holds %+v (%v), want 30 instances", st, err)
	}
	if err := p.Staging.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err = p.Staging.Stats(ctx); err != nil || st.CountInstances != 0 || st.CountPatients != 0 {
		t.Fatalf("after Clear staging holds %+v (%v)", st, err)
	}
}

// Close removes every file of the pair; Start of a running server is a no-op.
func TestCloseRemovesFiles(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	p, err := orthanctest.StartPair(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.PACS.Start(ctx); err != nil || !p.PACS.Running() {
		t.Errorf("Start of a running server: %v, running %v", err, p.PACS.Running())
	}
	if _, err := os.Stat(p.PACS.LogPath); err != nil {
		t.Errorf("no log: %v", err)
	}
	p.Close()
	if _, err := os.Stat(p.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists after Close: %v", p.Dir(), err)
	}
	if p.PACS.Running() || p.Staging.Running() {
		t.Error("servers still running after Close")
	}
}
