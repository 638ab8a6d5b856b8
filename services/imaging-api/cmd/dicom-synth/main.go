// Command dicom-synth loads synthetic DICOM studies into an Orthanc PACS
// (package dicomgen), either one study per imaging row of a synthetic OMOP
// database or a stand-alone numbered set.
//
// From OMOP: one study per omop.image_occurrence row with an accession
// number, with that accession number, the person as patient (ID, birth
// date, sex), the row's date, Study Instance UID and first Series Instance
// UID, and the modality named by the modality concept's concept_code (CT,
// MR, XR written as DX, US; rows with other modalities are skipped):
//
//	dicom-synth -dsn "$OMOP_READER_DSN" -orthanc http://127.0.0.1:8042 -user orthanc -password secret
//
// Stand-alone: N studies of patients SYNP0000001.., accession numbers
// SYN0000000001.., modalities cycling through CT, MR, XR and US:
//
//	dicom-synth -studies 20 -series 2 -instances 5 -orthanc http://127.0.0.1:8042
//
// The studies are deterministic, so a repeated run stores nothing new
// (Orthanc reports the instances as already stored). Progress and the
// summary go to stderr. The exit status is 2 for bad flags and 1 for any
// other failure.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flip-trust/node/services/imaging-api/internal/dicomgen"
	"github.com/flip-trust/node/shared/httpx"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// config is the parsed command line.
type config struct {
	dsn                 string
	studies, limit      int
	orthanc, user, pass string
	series, instances   int
	rows, cols          int
	concurrency         int
	progressEvery       time.Duration
}

// errUsage marks a command-line error (exit status 2).
var errUsage = errors.New("usage")

const maxStudies = 10_000_000

func parse(args []string, stderr io.Writer, getenv func(string) string) (config, error) {
	var c config
	fs := flag.NewFlagSet("dicom-synth", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.dsn, "dsn", "", "`DSN` of a synthetic OMOP database: one study per omop.image_occurrence row")
	fs.IntVar(&c.studies, "studies", 0, "generate `N` stand-alone studies instead of reading OMOP")
	fs.IntVar(&c.limit, "limit", 0, "with -dsn, load at most `N` studies (0: all)")
	fs.StringVar(&c.orthanc, "orthanc", getenv("ORTHANC_URL"), "`URL` of the PACS Orthanc's REST API (default $ORTHANC_URL)")
	fs.StringVar(&c.user, "user", getenv("ORTHANC_USERNAME"), "REST API `user` (default $ORTHANC_USERNAME)")
	fs.StringVar(&c.pass, "password", "", "REST API `password` (default $ORTHANC_PASSWORD)")
	fs.IntVar(&c.series, "series", 2, "series per study")
	fs.IntVar(&c.instances, "instances", 5, "instances per series")
	fs.IntVar(&c.rows, "rows", 16, "image rows")
	fs.IntVar(&c.cols, "cols", 16, "image columns")
	fs.IntVar(&c.concurrency, "concurrency", 4, "parallel uploads")
	fs.DurationVar(&c.progressEvery, "progress", 2*time.Second, "progress line `interval` (0: none)")
	if err := fs.Parse(args); err != nil {
		return c, errUsage
	}
	if c.pass == "" { // not a flag default, which -h would print
		c.pass = getenv("ORTHANC_PASSWORD")
	}
	bad := func(format string, a ...any) (config, error) {
		return c, fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
	}
	switch {
	case fs.NArg() > 0:
		return bad("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	case (c.dsn == "") == (c.studies == 0):
		return bad("set exactly one of -dsn and -studies")
	case c.studies < 0 || c.studies > maxStudies:
		return bad("-studies must be between 1 and %d", maxStudies)
	case c.limit < 0:
		return bad("-limit must not be negative")
	case c.limit > 0 && c.dsn == "":
		return bad("-limit applies to -dsn only")
	case !strings.HasPrefix(c.orthanc, "http://") && !strings.HasPrefix(c.orthanc, "https://"):
		return bad("-orthanc (or $ORTHANC_URL) must be an http(s) URL")
	case c.series < 1 || c.series > 1000 || c.instances < 1 || c.instances > 10000:
		return bad("-series must be between 1 and 1000 and -instances between 1 and 10000")
	case c.rows < 1 || c.rows > 2048 || c.cols < 1 || c.cols > 2048:
		return bad("-rows and -cols must be between 1 and 2048")
	case c.concurrency < 1 || c.concurrency > 64:
		return bad("-concurrency must be between 1 and 64")
	case c.progressEvery < 0:
		return bad("-progress must not be negative")
	}
	return c, nil
}

// run is the command; it returns the exit status.
func run(ctx context.Context, args []string, stderr io.Writer, getenv func(string) string) int {
	c, err := parse(args, stderr, getenv)
	if err != nil {
		if msg, ok := strings.CutPrefix(err.Error(), errUsage.Error()+": "); ok {
			fmt.Fprintln(stderr, "dicom-synth:", msg)
		}
		return 2
	}
	if err := load(ctx, c, stderr); err != nil {
		fmt.Fprintln(stderr, "dicom-synth:", err)
		return 1
	}
	return 0
}

func load(ctx context.Context, c config, stderr io.Writer) error {
	client := httpx.NewClient(dicomgen.UploadTimeout)
	if err := checkOrthanc(ctx, client, c); err != nil {
		return err
	}
	var (
		studies []dicomgen.Study
		skipped map[string]int
		source  string
	)
	if c.dsn != "" {
		var err error
		if studies, skipped, err = omopStudies(ctx, c.dsn, c.limit); err != nil {
			return err
		}
		source = "OMOP image_occurrence rows"
	} else {
		studies = standalone(c.studies)
		source = "stand-alone studies"
	}
	total := 0
	for i := range studies {
		studies[i].Series, studies[i].PerSeries, studies[i].Rows, studies[i].Cols = c.series, c.instances, c.rows, c.cols
		total += studies[i].Count()
	}
	fmt.Fprintf(stderr, "dicom-synth: loading %d %s (%d instances of %dx%d) into %s\n",
		len(studies), source, total, c.rows, c.cols, c.orthanc)
	for _, reason := range slices.Sorted(maps.Keys(skipped)) {
		fmt.Fprintf(stderr, "dicom-synth: skipped %d rows: %s\n", skipped[reason], reason)
	}

	start, last := time.Now(), time.Now()
	report := func(p dicomgen.Progress) {
		el := time.Since(start)
		fmt.Fprintf(stderr, "dicom-synth: %d/%d studies, %d/%d instances, %.1f MB, %.0f instances/s (%s)\n",
			p.Studies, len(studies), p.Instances, total, float64(p.Bytes)/1e6,
			float64(p.Instances)/max(el.Seconds(), 1e-3), el.Round(time.Millisecond))
	}
	up := &dicomgen.Uploader{URL: c.orthanc, User: c.user, Password: c.pass, Client: client}
	res, err := up.UploadStudies(ctx, slices.Values(studies), c.concurrency, func(p dicomgen.Progress) {
		if c.progressEvery > 0 && time.Since(last) >= c.progressEvery {
			last = time.Now()
			report(p)
		}
	})
	report(res)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "dicom-synth: done: %d studies, %d instances (%d new, %d already stored), %.1f MB in %s\n",
		res.Studies, res.Instances, res.Instances-res.AlreadyStored, res.AlreadyStored, float64(res.Bytes)/1e6,
		time.Since(start).Round(time.Millisecond))
	return nil
}

// checkOrthanc fails early when the Orthanc is unreachable or refuses the
// credentials.
func checkOrthanc(ctx context.Context, client *http.Client, c config) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(c.orthanc, "/")+"/system", nil)
	if err != nil {
		return fmt.Errorf("orthanc: %w", err)
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.pass)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("orthanc unreachable: %w", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("orthanc: GET /system answered %s", resp.Status)
	}
	return nil
}

// standalone returns n numbered studies, one per patient.
func standalone(n int) []dicomgen.Study {
	modalities := []string{"CT", "MR", "XR", "US"}
	sexes := []string{"F", "M"}
	out := make([]dicomgen.Study, n)
	for i := range n {
		out[i] = dicomgen.Study{
			PatientID:       fmt.Sprintf("SYNP%07d", i+1),
			Sex:             sexes[i%2],
			BirthDate:       fmt.Sprintf("%04d%02d%02d", 1940+i%60, 1+i%12, 1+i%28),
			AccessionNumber: fmt.Sprintf("SYN%010d", i+1),
			Modality:        modalities[i%len(modalities)],
			StudyDate:       fmt.Sprintf("%04d%02d%02d", 2015+i%10, 1+(i/7)%12, 1+i%28),
		}
	}
	return out
}

// OMOP gender concepts.
const (
	conceptMale   = 8507
	conceptFemale = 8532
)

// omopQuery reads the imaging rows with their modality code and person.
const omopQuery = `SELECT io.accession_id, io.person_id, c.concept_code, io.image_study_uid, io.image_series_uid,
	to_char(io.image_occurrence_date, 'YYYYMMDD'), p.gender_concept_id, p.year_of_birth, p.month_of_birth, p.day_of_birth
FROM omop.image_occurrence io
LEFT JOIN omop.concept c ON c.concept_id = io.modality_concept_id
LEFT JOIN omop.person p ON p.person_id = io.person_id
WHERE io.accession_id IS NOT NULL AND io.accession_id <> ''
ORDER BY io.image_occurrence_id
LIMIT $1`

// omopRow is one imaging row as read.
type omopRow struct {
	accession, modality, studyUID, seriesUID, date *string
	person                                         int64
	gender, year, month, day                       *int32
}

// omopStudies reads up to limit (0: all) studies; rows that cannot become a
// valid study are counted by reason in skipped.
func omopStudies(ctx context.Context, dsn string, limit int) ([]dicomgen.Study, map[string]int, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, nil, fmt.Errorf("OMOP database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var lim any // NULL: no limit
	if limit > 0 {
		lim = limit
	}
	rows, err := conn.Query(ctx, omopQuery, lim)
	if err != nil {
		return nil, nil, fmt.Errorf("read omop.image_occurrence: %w", err)
	}
	defer rows.Close()
	var out []dicomgen.Study
	skipped := map[string]int{}
	for rows.Next() {
		var r omopRow
		if err := rows.Scan(&r.accession, &r.person, &r.modality, &r.studyUID, &r.seriesUID, &r.date,
			&r.gender, &r.year, &r.month, &r.day); err != nil {
			return nil, nil, fmt.Errorf("read omop.image_occurrence: %w", err)
		}
		s, reason := r.study()
		if reason != "" {
			skipped[reason]++
			continue
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("read omop.image_occurrence: %w", err)
	}
	return out, skipped, nil
}

// study maps a row to a study, or returns why it cannot.
func (r omopRow) study() (dicomgen.Study, string) {
	s := dicomgen.Study{
		PatientID:       fmt.Sprint(r.person),
		AccessionNumber: deref(r.accession),
		Modality:        deref(r.modality),
		StudyUID:        deref(r.studyUID),
		StudyDate:       deref(r.date),
		Sex:             "O",
	}
	if _, ok := dicomgen.Modalities[strings.ToUpper(s.Modality)]; !ok {
		return s, "modality not CT, MR, XR, CR, DX or US"
	}
	if series := deref(r.seriesUID); series != "" && dicomgen.CheckUID(series) == nil {
		s.SeriesUIDs = []string{series}
	}
	if r.gender != nil {
		switch *r.gender {
		case conceptMale:
			s.Sex = "M"
		case conceptFemale:
			s.Sex = "F"
		}
	}
	if r.year != nil && *r.year > 0 && *r.year < 10000 {
		m, d := int32(1), int32(1)
		if r.month != nil && *r.month >= 1 && *r.month <= 12 {
			m = *r.month
		}
		if r.day != nil && *r.day >= 1 && *r.day <= 31 {
			d = *r.day
		}
		s.BirthDate = fmt.Sprintf("%04d%02d%02d", *r.year, m, d)
	}
	if _, err := s.Instances(); err != nil {
		switch {
		case len(s.AccessionNumber) > 16:
			return s, "accession number longer than 16 characters"
		case dicomgen.CheckUID(s.StudyUID) != nil:
			return s, "image_study_uid is not a valid DICOM UID"
		default:
			return s, "invalid study attributes"
		}
	}
	return s, ""
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return strings.TrimSpace(*p)
}
