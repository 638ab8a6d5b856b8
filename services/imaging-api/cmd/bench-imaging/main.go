// Command bench-imaging measures imaging-api's import and download paths on
// two real Orthanc processes (PACS and staging) against baselines taken in
// the same run:
//
//   - import: N studies x M instances moved PACS -> staging by imaging-api's
//     import machinery (durable journal, C-FIND, C-MOVE, presence check), at
//     IMPORT_CONCURRENCY 4, against the same C-MOVEs issued straight to the
//     staging Orthanc's REST API at the same concurrency (goal <= 1.2x);
//   - download: staging an accession for an FL job (FLIP's layout) against
//     Orthanc's own /studies/{id}/archive endpoint, in MB/s.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/flip-trust/node/services/imaging-api/internal/dicomgen"
	"github.com/flip-trust/node/services/imaging-api/internal/imagecache"
	"github.com/flip-trust/node/services/imaging-api/internal/importer"
	"github.com/flip-trust/node/services/imaging-api/internal/native"
	"github.com/flip-trust/node/services/imaging-api/internal/orthanc"
	"github.com/flip-trust/node/services/imaging-api/internal/orthanctest"
	"github.com/flip-trust/node/shared/logging"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-imaging:", err)
		os.Exit(1)
	}
}

func run() error {
	studies := flag.Int("studies", 50, "studies on the PACS")
	perStudy := flag.Int("instances", 20, "instances per study")
	size := flag.Int("size", 256, "image rows and columns")
	concurrency := flag.Int("concurrency", 4, "studies moved at once")
	flag.Parse()
	ctx := context.Background()

	pair, err := orthanctest.StartPair(ctx)
	if err != nil {
		return err
	}
	defer pair.Close()
	var set []dicomgen.Study
	for i := range *studies {
		set = append(set, dicomgen.Study{PatientID: fmt.Sprintf("BENCH%03d", i), AccessionNumber: fmt.Sprintf("BENCH-%04d", i),
			Modality: "CT", Series: 1, PerSeries: *perStudy, Rows: *size, Cols: *size})
	}
	up := &dicomgen.Uploader{URL: pair.PACS.URL, User: pair.PACS.User, Password: pair.PACS.Password}
	loaded, err := up.UploadStudies(ctx, slices.Values(set), 4, nil)
	if err != nil {
		return err
	}
	fmt.Printf("PACS loaded: %d studies, %d instances, %.1f MB\n", loaded.Studies, loaded.Instances, float64(loaded.Bytes)/1e6)
	oc, err := orthanc.New(orthanc.Config{URL: pair.Staging.URL, User: pair.Staging.User, Password: pair.Staging.Password})
	if err != nil {
		return err
	}

	// Baseline: the C-MOVEs straight to Orthanc's REST API.
	uids := make([]string, len(set))
	for i, s := range set {
		found, err := oc.FindStudies(ctx, orthanctest.PACSAET, s.AccessionNumber)
		if err != nil || len(found) != 1 {
			return fmt.Errorf("find %s: %v (%d)", s.AccessionNumber, err, len(found))
		}
		uids[i] = found[0].StudyInstanceUID
	}
	start := time.Now()
	if err := parallel(uids, *concurrency, func(uid string) error {
		return oc.MoveStudy(ctx, orthanctest.PACSAET, uid, orthanctest.StagingAET)
	}); err != nil {
		return err
	}
	bare := time.Since(start)
	if err := expect(ctx, pair.Staging, *studies, *studies**perStudy); err != nil {
		return err
	}
	if err := pair.Staging.Clear(ctx); err != nil {
		return err
	}

	// imaging-api's import machinery.
	dir, err := os.MkdirTemp("", "bench-imaging-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	backend := &native.Backend{Orthanc: oc, PACS: orthanctest.PACSAET, StagingAET: orthanctest.StagingAET}
	imp, err := importer.Open(importer.Options{Path: filepath.Join(dir, "imports.db"), Concurrency: *concurrency,
		Logger: logging.Discard()}, backend)
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	imp.Start(runCtx)
	accessions := make([]string, len(set))
	for i, s := range set {
		accessions[i] = s.AccessionNumber
	}
	start = time.Now()
	if err := imp.Enqueue("bench", accessions); err != nil {
		return err
	}
	for {
		if done, _ := imp.Progress("bench"); done == len(accessions) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	ours := time.Since(start)
	if c, err := imp.Status("bench", accessions); err != nil || c.Successful != len(accessions) {
		return fmt.Errorf("import ended with %+v (%v)", c, err)
	}
	if err := expect(ctx, pair.Staging, *studies, *studies**perStudy); err != nil {
		return err
	}
	fmt.Printf("\nimport of %d instances (%d studies x %d), concurrency %d (goal: <= 1.2x)\n", *studies**perStudy, *studies, *perStudy, *concurrency)
	fmt.Printf("  C-MOVEs straight to Orthanc's REST API  %8.0f ms\n", ms(bare))
	fmt.Printf("  through imaging-api's import journal    %8.0f ms   ratio %.2fx%s\n", ms(ours), float64(ours)/float64(bare),
		verdict(float64(ours)/float64(bare) <= 1.2))

	// Downloads: Orthanc's archive endpoint vs staging for an FL job.
	var total int64
	start = time.Now()
	for _, uid := range uids {
		local, err := oc.LocalStudy(ctx, uid)
		if err != nil {
			return err
		}
		rc, err := oc.StudyArchive(ctx, local.ID)
		if err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return err
		}
		total += n
	}
	archive := time.Since(start)
	cache, err := imagecache.New(filepath.Join(dir, "images"), nil)
	if err != nil {
		return err
	}
	start = time.Now()
	for i, uid := range uids {
		key := imagecache.Key{Net: "net-1", Project: "bench", Accession: set[i].AccessionNumber, Assessor: "scan", Resource: native.ResourceDICOM}
		if _, err := cache.Get(ctx, key, false, func(ctx context.Context, w io.Writer) error {
			return native.Fetch(ctx, oc, uid, set[i].AccessionNumber, native.ResourceDICOM, cache.Base(), "", w)
		}); err != nil {
			return err
		}
	}
	staged := time.Since(start)
	stop()
	_ = imp.Close()
	mb := float64(total) / 1e6
	fmt.Printf("\ndownload of %d studies (%.1f MB of archives), one at a time\n", len(uids), mb)
	fmt.Printf("  Orthanc /studies/{id}/archive           %8.0f ms  %7.1f MB/s\n", ms(archive), mb/archive.Seconds())
	fmt.Printf("  staged for an FL job (FLIP layout)      %8.0f ms  %7.1f MB/s   ratio %.2fx\n", ms(staged), mb/staged.Seconds(),
		float64(staged)/float64(archive))
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func verdict(ok bool) string {
	if ok {
		return "  ok"
	}
	return "  MISSED"
}

func parallel(items []string, n int, fn func(string) error) error {
	sem := make(chan struct{}, n)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, it := range items {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(it); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func expect(ctx context.Context, s *orthanctest.Server, studies, instances int) error {
	st, err := s.Stats(ctx)
	if err != nil {
		return err
	}
	if st.CountStudies != studies || st.CountInstances != instances {
		return fmt.Errorf("staging holds %d studies and %d instances, want %d and %d", st.CountStudies, st.CountInstances, studies, instances)
	}
	return nil
}
