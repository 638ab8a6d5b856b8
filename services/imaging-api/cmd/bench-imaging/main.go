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
//
// Each is measured in several rounds that alternate which side goes first,
// so that neither side always meets a colder or busier machine; every round
// is printed, and the verdict is taken on the median of the rounds' ratios.
package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/flip-trust/node/services/imaging-api/internal/config"
	"github.com/flip-trust/node/services/imaging-api/internal/dicomgen"
	"github.com/flip-trust/node/services/imaging-api/internal/imagecache"
	"github.com/flip-trust/node/services/imaging-api/internal/importer"
	"github.com/flip-trust/node/services/imaging-api/internal/native"
	"github.com/flip-trust/node/services/imaging-api/internal/orthanc"
	"github.com/flip-trust/node/services/imaging-api/internal/orthanctest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-imaging:", err)
		os.Exit(1)
	}
}

type bench struct {
	pair        *orthanctest.Pair
	oc          *orthanc.Client
	set         []dicomgen.Study
	uids        []string
	perStudy    int
	concurrency int
	imp         *importer.Importer
	calls       *timedBackend
	cache       *imagecache.Cache
}

func run() error {
	studies := flag.Int("studies", 50, "studies on the PACS")
	perStudy := flag.Int("instances", 20, "instances per study")
	size := flag.Int("size", 256, "image rows and columns")
	concurrency := flag.Int("concurrency", 4, "studies moved at once")
	rounds := flag.Int("rounds", 5, "rounds of each measurement, alternating which side goes first")
	download := flag.Bool("download", true, "measure downloads too")
	cpuProfile := flag.String("cpuprofile", "", "write this process's CPU profile of the import rounds to this file")
	flag.Parse()
	if *rounds < 1 {
		return errors.New("-rounds must be at least 1")
	}
	ctx := context.Background()

	pair, err := orthanctest.StartPair(ctx)
	if err != nil {
		return err
	}
	defer pair.Close()
	b := &bench{pair: pair, perStudy: *perStudy, concurrency: *concurrency}
	for i := range *studies {
		b.set = append(b.set, dicomgen.Study{PatientID: fmt.Sprintf("BENCH%03d", i), AccessionNumber: fmt.Sprintf("BENCH-%04d", i),
			Modality: "CT", Series: 1, PerSeries: *perStudy, Rows: *size, Cols: *size})
	}
	up := &dicomgen.Uploader{URL: pair.PACS.URL, User: pair.PACS.User, Password: pair.PACS.Password}
	loaded, err := up.UploadStudies(ctx, slices.Values(b.set), 4, nil)
	if err != nil {
		return err
	}
	fmt.Printf("PACS loaded: %d studies, %d instances, %.1f MB\n", loaded.Studies, loaded.Instances, float64(loaded.Bytes)/1e6)
	b.oc, err = orthanc.New(orthanc.Config{URL: pair.Staging.URL, User: pair.Staging.User, Password: pair.Staging.Password})
	if err != nil {
		return err
	}
	for _, s := range b.set {
		found, err := b.oc.FindStudies(ctx, orthanctest.PACSAET, s.AccessionNumber)
		if err != nil || len(found) != 1 {
			return fmt.Errorf("find %s: %v (%d)", s.AccessionNumber, err, len(found))
		}
		b.uids = append(b.uids, found[0].StudyInstanceUID)
	}

	dir, err := os.MkdirTemp("", "bench-imaging-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	backend := &native.Backend{Orthanc: b.oc, PACS: orthanctest.PACSAET, StagingAET: orthanctest.StagingAET}
	b.calls = &timedBackend{Backend: backend}
	// The importer runs with imaging-api's default configuration (retries,
	// backoff, stall timeout), at the concurrency asked for.
	cfg, err := config.Load(func(name string) string {
		return map[string]string{"BASE_IMAGES_DOWNLOAD_DIR": dir, "AES_KEY_BASE64": base64.StdEncoding.EncodeToString(make([]byte, 32))}[name]
	})
	if err != nil {
		return err
	}
	// Failed attempts are logged: each one waits out a backoff, which a
	// round's time shows but does not explain.
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	b.imp, err = importer.Open(importer.Options{Path: filepath.Join(dir, "imports.db"), Concurrency: *concurrency,
		MaxAttempts: cfg.ImportAttempts, BackoffMin: cfg.ImportBackoffMin, BackoffMax: cfg.ImportBackoffMax,
		StallTimeout: cfg.ImportStall, Logger: logger}, b.calls)
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	b.imp.Start(runCtx)
	defer b.imp.Close()
	if b.cache, err = imagecache.New(filepath.Join(dir, "images"), nil); err != nil {
		return err
	}

	// An untimed pass first: a fresh staging Orthanc is slower to fill
	// (new storage folders, a growing index) than one that already held
	// and dropped the studies, which every measured pass then meets.
	if _, err := b.importDirect(ctx); err != nil {
		return err
	}
	if err := pair.Staging.Clear(ctx); err != nil {
		return err
	}

	fmt.Printf("\nimport of %d instances (%d studies x %d), concurrency %d (goal: <= 1.2x)\n",
		*studies**perStudy, *studies, *perStudy, *concurrency)
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var importRatios, cpuRatios []float64
	for r := range *rounds {
		var (
			bare, ours       time.Duration
			bareCPU, oursCPU cpuUse
			retried          int
		)
		sides := []func() error{
			func() (err error) {
				c := b.cpu()
				bare, err = b.importDirect(ctx)
				bareCPU = b.cpu().minus(c)
				return err
			},
			func() (err error) {
				c := b.cpu()
				ours, retried, err = b.importJournal(ctx, fmt.Sprintf("bench-%d", r+1))
				oursCPU = b.cpu().minus(c)
				return err
			},
		}
		if r%2 == 1 {
			slices.Reverse(sides)
		}
		for _, side := range sides {
			if err := side(); err != nil {
				return err
			}
			if err := pair.Staging.Clear(ctx); err != nil {
				return err
			}
		}
		importRatios = append(importRatios, float64(ours)/float64(bare))
		cpuRatios = append(cpuRatios, float64(oursCPU.total())/float64(bareCPU.total()))
		first := "direct first"
		if r%2 == 1 {
			first = "imaging-api first"
		}
		fmt.Printf("  round %d (%s)\n", r+1, first)
		fmt.Printf("    C-MOVEs straight to Orthanc's REST API  %8.0f ms   CPU %s\n", ms(bare), bareCPU)
		fmt.Printf("    through imaging-api's import journal    %8.0f ms   CPU %s   ratio %.2fx (CPU %.2fx)\n",
			ms(ours), oursCPU, float64(ours)/float64(bare), float64(oursCPU.total())/float64(bareCPU.total()))
		if retried > 0 {
			fmt.Printf("    (%d accessions needed more than one attempt: see the log above)\n", retried)
		}
	}
	med, lo, hi := spread(importRatios)
	fmt.Printf("  median ratio %.2fx (rounds %.2f-%.2fx)%s\n", med, lo, hi, verdict(med <= 1.2))
	med, lo, hi = spread(cpuRatios)
	fmt.Printf("  median CPU ratio %.2fx (rounds %.2f-%.2fx): CPU time of both Orthancs and this process\n", med, lo, hi)
	fmt.Printf("  imaging-api's backend calls, mean per accession: %s\n", b.calls.summary())

	if !*download {
		return nil
	}
	// Downloads need the studies in staging.
	if _, _, err := b.importJournal(ctx, "bench-download"); err != nil {
		return err
	}
	var total int64
	var dlRatios []float64
	fmt.Printf("\ndownload of %d studies, one at a time\n", len(b.uids))
	for r := range *rounds {
		var archive, staged time.Duration
		sides := []func() error{
			func() (err error) { archive, total, err = b.downloadArchive(ctx); return err },
			func() (err error) { staged, err = b.downloadStaged(ctx, fmt.Sprintf("net-%d", r+1)); return err },
		}
		if r%2 == 1 {
			slices.Reverse(sides)
		}
		for _, side := range sides {
			if err := side(); err != nil {
				return err
			}
		}
		mb := float64(total) / 1e6
		dlRatios = append(dlRatios, float64(staged)/float64(archive))
		fmt.Printf("  round %d (%.1f MB of archives)\n", r+1, mb)
		fmt.Printf("    Orthanc /studies/{id}/archive           %8.0f ms  %7.1f MB/s\n", ms(archive), mb/archive.Seconds())
		fmt.Printf("    staged for an FL job (FLIP layout)      %8.0f ms  %7.1f MB/s   ratio %.2fx\n", ms(staged), mb/staged.Seconds(),
			float64(staged)/float64(archive))
	}
	med, lo, hi = spread(dlRatios)
	fmt.Printf("  median time ratio %.2fx (rounds %.2f-%.2fx)\n", med, lo, hi)
	return nil
}

// importDirect issues the C-MOVEs straight to staging's REST API, at the
// same concurrency as the importer.
func (b *bench) importDirect(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	if err := parallel(b.uids, b.concurrency, func(uid string) error {
		return b.oc.MoveStudy(ctx, orthanctest.PACSAET, uid, orthanctest.StagingAET)
	}); err != nil {
		return 0, err
	}
	took := time.Since(start)
	return took, expect(ctx, b.pair.Staging, len(b.set), len(b.set)*b.perStudy)
}

// importJournal imports every accession as a new project through the
// importer; it also returns how many accessions needed a second attempt.
func (b *bench) importJournal(ctx context.Context, project string) (time.Duration, int, error) {
	accessions := make([]string, len(b.set))
	for i, s := range b.set {
		accessions[i] = s.AccessionNumber
	}
	start := time.Now()
	if err := b.imp.Enqueue(project, accessions); err != nil {
		return 0, 0, err
	}
	// Wait wakes as each attempt ends. Polling Progress every 10 ms instead
	// cost this process about 40 ms of CPU a round, a quarter of what it
	// spent, and told the end up to 10 ms late.
	if _, _, err := b.imp.Wait(ctx, project); err != nil {
		return 0, 0, err
	}
	took := time.Since(start)
	if c, err := b.imp.Status(project, accessions); err != nil || c.Successful != len(accessions) {
		return 0, 0, fmt.Errorf("import ended with %+v (%v)", c, err)
	}
	recs, err := b.imp.Records(project)
	if err != nil {
		return 0, 0, err
	}
	retried := 0
	for _, r := range recs {
		if r.Attempts > 0 {
			retried++
		}
	}
	return took, retried, expect(ctx, b.pair.Staging, len(b.set), len(b.set)*b.perStudy)
}

// downloadArchive streams every study's archive from staging.
func (b *bench) downloadArchive(ctx context.Context) (time.Duration, int64, error) {
	var total int64
	start := time.Now()
	for _, uid := range b.uids {
		local, err := b.oc.LocalStudy(ctx, uid)
		if err != nil {
			return 0, 0, err
		}
		rc, err := b.oc.StudyArchive(ctx, local.ID)
		if err != nil {
			return 0, 0, err
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return 0, 0, err
		}
		total += n
	}
	return time.Since(start), total, nil
}

// downloadStaged stages every study for an FL job of net, as the download
// route does.
func (b *bench) downloadStaged(ctx context.Context, net string) (time.Duration, error) {
	start := time.Now()
	for i, uid := range b.uids {
		key := imagecache.Key{Net: net, Project: "bench", Accession: b.set[i].AccessionNumber, Assessor: "scan", Resource: native.ResourceDICOM}
		if _, err := b.cache.Get(ctx, key, false, func(ctx context.Context, w io.Writer) error {
			return native.Fetch(ctx, b.oc, uid, b.set[i].AccessionNumber, native.ResourceDICOM, b.cache.Base(), "", w)
		}); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

// cpuUse is CPU time (user and system) of this process and of the PACS
// and staging Orthancs: unlike the elapsed time, it hardly depends on what
// else the machine runs.
type cpuUse struct{ self, pacs, staging time.Duration }

func (c cpuUse) total() time.Duration { return c.self + c.pacs + c.staging }

func (c cpuUse) minus(o cpuUse) cpuUse {
	return cpuUse{c.self - o.self, c.pacs - o.pacs, c.staging - o.staging}
}

func (c cpuUse) String() string {
	return fmt.Sprintf("%6.0f ms (PACS %4.0f, staging %4.0f, this process %4.0f)", ms(c.total()), ms(c.pacs), ms(c.staging), ms(c.self))
}

// cpu returns the CPU time used so far by this process and both Orthanc
// servers.
func (b *bench) cpu() cpuUse {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return cpuUse{
		self:    time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
		pacs:    processCPU(b.pair.PACS.PID()),
		staging: processCPU(b.pair.Staging.PID()),
	}
}

// processCPU reads a process's user and system time from /proc (0 when
// unreadable).
func processCPU(pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name (in parentheses): state is the
	// first, utime and stime the 12th and 13th, in clock ticks.
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return time.Duration(utime+stime) * tick
}

// timedBackend adds up the time the importer spends in each backend call.
type timedBackend struct {
	importer.Backend
	mu    sync.Mutex
	spent map[string]time.Duration
	calls map[string]int
}

// failed prints a failed call's error: the importer logs only its kind,
// and the bench's accessions are synthetic.
func (t *timedBackend) failed(call string, err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "    %s failed: %v\n", call, err)
	}
}

func (t *timedBackend) since(call string, start time.Time) {
	d := time.Since(start)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.spent == nil {
		t.spent, t.calls = map[string]time.Duration{}, map[string]int{}
	}
	t.spent[call] += d
	t.calls[call]++
}

func (t *timedBackend) Find(ctx context.Context, accession string) ([]importer.Match, error) {
	defer t.since("find", time.Now())
	found, err := t.Backend.Find(ctx, accession)
	t.failed("find", err)
	return found, err
}

func (t *timedBackend) Present(ctx context.Context, m importer.Match) (bool, error) {
	defer t.since("present", time.Now())
	ok, err := t.Backend.Present(ctx, m)
	t.failed("staging check", err)
	return ok, err
}

func (t *timedBackend) Move(ctx context.Context, m importer.Match, progress func(int)) error {
	defer t.since("move", time.Now())
	err := t.Backend.Move(ctx, m, progress)
	t.failed("move", err)
	return err
}

func (t *timedBackend) summary() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := ""
	for _, call := range []string{"find", "present", "move"} {
		if n := t.calls[call]; n > 0 {
			s += fmt.Sprintf("%s %.1f ms  ", call, ms(t.spent[call])/float64(n))
		}
	}
	return s
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// spread returns the median, least and greatest of xs.
func spread(xs []float64) (med, lo, hi float64) {
	s := slices.Sorted(slices.Values(xs))
	med = s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return med, s[0], s[len(s)-1]
}

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
