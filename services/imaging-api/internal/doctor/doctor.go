// Package doctor is "imaging-api doctor": the checks of imaging-api's own
// dependencies with its own configuration — the staging Orthanc and its
// credentials, a DICOM C-ECHO from staging to the PACS (the association
// every import uses), data-access-api, the internal key, and the disks of
// the import journal and the images staged for FL jobs. It prints
// shared/doctor's line format.
package doctor

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/flip-trust/node/services/imaging-api/internal/config"
	"github.com/flip-trust/node/services/imaging-api/internal/orthanc"
	"github.com/flip-trust/node/shared/doctor"
	"github.com/flip-trust/node/shared/httpx"
)

// Thresholds of the disk checks: staged images need room.
const (
	JournalFailBelow = 256 << 20
	JournalWarnBelow = 1 << 30
	ImagesFailBelow  = 1 << 30
	ImagesWarnBelow  = 10 << 30
)

// Run runs "imaging-api doctor" with args (after "doctor") and the
// environment read through getenv; it returns the exit code.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) int {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(stdout)
	timeout := fs.Duration("timeout", 30*time.Second, "bound on each check")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(getenv)
	checks := append([]doctor.Check{doctor.Config(err)}, Checks(cfg, httpx.NewClient(*timeout))...)
	return doctor.Run(ctx, stdout, "imaging-api", checks, doctor.Options{Timeout: *timeout}).ExitCode()
}

// Checks are imaging-api's checks for cfg.
func Checks(cfg config.Config, client *http.Client) []doctor.Check {
	var checks []doctor.Check
	if cfg.Backend == config.BackendXNAT {
		checks = append(checks,
			doctor.NewEndpoint(cfg.XNATURL, client).Reachable("XNAT reachable", "start XNAT (the xnat stack), or correct XNAT_URL"),
			doctor.Check{Name: "PACS C-ECHO", Run: func(context.Context) doctor.Result {
				return doctor.Skip("IMAGING_BACKEND=xnat: XNAT holds the PACS association; test it from XNAT's DICOM settings")
			}})
	} else {
		oc, err := orthanc.New(orthanc.Config{URL: cfg.OrthancURL, User: cfg.OrthancUser, Password: cfg.OrthancPassword})
		checks = append(checks, StagingChecks(oc, err, cfg.PACSModality)...)
	}
	checks = append(checks,
		doctor.NewEndpoint(strings.TrimRight(cfg.DataAccessURL, "/")+"/health", client).Reachable("data-access-api reachable",
			"start data-access-api, or correct DATA_ACCESS_API_URL"),
		doctor.InternalKey(cfg.InternalKey),
		doctor.DiskSpace("import journal disk", "IMAGING_API_DATA_DIR", cfg.DataDir, JournalFailBelow, JournalWarnBelow),
		doctor.DiskSpace("staged images disk", "BASE_IMAGES_DOWNLOAD_DIR", cfg.ImagesDir, ImagesFailBelow, ImagesWarnBelow),
	)
	return checks
}

// StagingChecks check the staging Orthanc (oc, or the error that building
// its client gave) and its C-ECHO to the PACS modality pacs.
func StagingChecks(oc *orthanc.Client, clientErr error, pacs string) []doctor.Check {
	staging := doctor.Check{Name: "staging Orthanc", Run: func(ctx context.Context) doctor.Result {
		if clientErr != nil {
			return doctor.Fail("set ORTHANC_URL to the staging Orthanc's REST URL", "%v", clientErr)
		}
		sys, err := oc.System(ctx)
		switch {
		case errors.Is(err, orthanc.ErrUnauthorized):
			return doctor.Fail("set ORTHANC_USERNAME and ORTHANC_PASSWORD (or _FILE) to a user registered in staging's RegisteredUsers", "%v", err)
		case err != nil:
			return doctor.Fail("start the staging Orthanc, or correct ORTHANC_URL", "%v", err)
		}
		return doctor.Pass("%s (AE %s, DICOM port %d), Orthanc %s", sys.Name, sys.DicomAet, sys.DicomPort, sys.Version)
	}}
	echo := doctor.Check{Name: "PACS C-ECHO", Run: func(ctx context.Context) doctor.Result {
		if clientErr != nil {
			return doctor.Fail("fix the staging Orthanc first", "no staging client")
		}
		start := time.Now()
		err := oc.Echo(ctx, pacs)
		switch {
		case errors.Is(err, orthanc.ErrUnauthorized), errors.Is(err, orthanc.ErrUnavailable):
			return doctor.Fail("fix the staging Orthanc first", "%v", err)
		case err != nil:
			return doctor.Fail(fmt.Sprintf("check that staging lists %q in DicomModalities with the PACS's AE title, host and port, that the PACS knows staging's AE title and host, and that the DICOM port is open between them (PACS_AETITLE names the modality)", pacs),
				"staging -> %s: %v", pacs, err)
		}
		return doctor.Pass("staging -> %s answered in %s", pacs, time.Since(start).Round(time.Millisecond))
	}}
	return []doctor.Check{staging, echo}
}
