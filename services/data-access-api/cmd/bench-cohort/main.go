// Command bench-cohort measures data-access-api's POST /cohort on a synthetic
// OMOP population (1M persons by default) against two baselines measured in
// the same run on the same database:
//
//   - bare: SELECT count(DISTINCT person_id) FROM (<query>) — the least any
//     statistics can cost (goal: ours at most 1.3x);
//   - client-side: every cohort row fetched into the client and aggregated
//     there, then the age, sex and modality lookups by id list, as FLIP's
//     service does (goal: ours at least 5x faster);
//
// each warmed up once and then timed in turns (ours, bare, client-side), and
// the service's peak RSS while answering 10k, 100k and 1M-person cohorts
// (goal: at most 64 MiB, and flat).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flip-trust/node/services/data-access-api/internal/pgcluster"
	"github.com/flip-trust/node/services/data-access-api/internal/synth"
	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/mesh"
)

const (
	readerPassword = "bench-reader-password"
	internalKey    = "bench-internal-service-key-0123456789abcdef"
	aesKey         = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
)

type shape struct{ name, sql string }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-cohort:", err)
		os.Exit(1)
	}
}

func run() error {
	bin := flag.String("data-access-api", "bin/data-access-api", "data-access-api binary")
	persons := flag.Int("persons", 1_000_000, "synthetic population size")
	seed := flag.Uint64("seed", 1, "synthetic data seed")
	dir := flag.String("dir", "", "cluster directory; a loaded population there is reused (default: a fresh temporary one)")
	runs := flag.Int("runs", 3, "timed runs per measurement (the median is reported)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *dir == "" {
		tmp, err := os.MkdirTemp("", "bench-cohort-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		if err := os.Chmod(tmp, 0o711); err != nil {
			return err
		}
		*dir = tmp
	}
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{Dir: filepath.Join(*dir, "cluster"),
		Settings: map[string]string{"max_parallel_workers_per_gather": "2", "work_mem": "64MB"}})
	if err != nil {
		return err
	}
	defer cluster.Stop()
	marker := filepath.Join(*dir, fmt.Sprintf("loaded-%d-%d", *persons, *seed))
	if _, err := os.Stat(marker); err != nil {
		fmt.Printf("loading %d synthetic persons (seed %d)...\n", *persons, *seed)
		if err := pgcluster.Provision(ctx, cluster, readerPassword, true); err != nil {
			return err
		}
		res, err := synth.Load(ctx, cluster.SuperuserDSN(pgcluster.Database), synth.Options{Persons: *persons, Seed: *seed, Truncate: true})
		if err != nil {
			return err
		}
		fmt.Printf("loaded in %s (copy %s, indexes %s, analyze %s)\n", res.Elapsed.Round(time.Second),
			res.Copy.Round(time.Second), res.Index.Round(time.Second), res.Analyze.Round(time.Second))
		if err := os.WriteFile(marker, nil, 0o644); err != nil {
			return err
		}
	} else {
		fmt.Printf("reusing the %d-person population in %s\n", *persons, *dir)
	}

	svc, err := startService(ctx, *bin, cluster)
	if err != nil {
		return err
	}
	defer svc.stop()

	reader, err := pgx.Connect(ctx, cluster.DSN(pgcluster.Reader, readerPassword, pgcluster.Database))
	if err != nil {
		return err
	}
	defer reader.Close(ctx)

	shapes := []shape{
		{"person filter", "SELECT person_id, gender_source_value, year_of_birth FROM person WHERE year_of_birth BETWEEN 1940 AND 1990"},
		{"join condition_occurrence", fmt.Sprintf(`SELECT p.person_id, co.condition_concept_id, co.condition_start_date
FROM person p JOIN condition_occurrence co ON co.person_id = p.person_id
WHERE co.condition_concept_id IN (%d, %d)`, synth.ConceptHypertension, synth.ConceptType2Diabetes)},
		{"join image_occurrence", `SELECT p.person_id, io.accession_id, io.modality_concept_id
FROM person p JOIN image_occurrence io ON io.person_id = p.person_id`},
	}
	fmt.Printf("\nPOST /cohort at %d persons, median of %d runs (goals: <= 1.3x bare count, >= 5x faster than client-side)\n", *persons, *runs)
	fmt.Printf("%-27s %10s %10s %12s %12s %12s %9s\n", "query shape", "subjects", "ours", "bare count", "ours/bare", "client-side", "speed-up")
	failed := false
	for _, s := range shapes {
		var subjects int64
		// The three are timed in turns, so a change in the machine's load
		// during the run weighs on each alike.
		ds, err := medians(*runs,
			func() error {
				n, err := svc.cohort(ctx, s.sql)
				subjects = n
				return err
			},
			func() error {
				var n int64
				return reader.QueryRow(ctx, "SELECT count(DISTINCT person_id) FROM ("+s.sql+") q").Scan(&n)
			},
			func() error { return clientSide(ctx, reader, s.sql) })
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		ours, bare, client := ds[0], ds[1], ds[2]
		ratio, speedup := float64(ours)/float64(bare), float64(client)/float64(ours)
		fmt.Printf("%-27s %10d %10s %12s %11.2fx %12s %8.1fx%s\n", s.name, subjects, ms(ours), ms(bare), ratio, ms(client), speedup,
			verdict(ratio <= 1.3 && speedup >= 5))
		failed = failed || ratio > 1.3 || speedup < 5
	}

	fmt.Printf("\ndata-access-api peak RSS per cohort size (goal: <= 64 MiB and flat)\n")
	fmt.Printf("%-12s %10s %12s\n", "cohort", "subjects", "peak RSS")
	var peaks []float64
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		if n > *persons {
			continue
		}
		if err := svc.resetPeak(); err != nil {
			return err
		}
		got, err := svc.cohort(ctx, fmt.Sprintf("SELECT person_id, year_of_birth, gender_source_value FROM person WHERE person_id <= %d", n))
		if err != nil {
			return err
		}
		peak, err := svc.peakRSS()
		if err != nil {
			return err
		}
		peaks = append(peaks, peak)
		fmt.Printf("%-12s %10d %9.1f MiB\n", strconv.Itoa(n/1000)+"k", got, peak)
	}
	if len(peaks) > 0 {
		lo, hi := slices.Min(peaks), slices.Max(peaks)
		ok := hi <= 64 && hi/lo <= 1.25
		fmt.Printf("max %.1f MiB, max/min %.2f%s\n", hi, hi/lo, verdict(ok))
		failed = failed || !ok
	}
	if failed {
		fmt.Println("\nsome goals were missed")
	}
	return nil
}

func verdict(ok bool) string {
	if ok {
		return "  ok"
	}
	return "  MISSED"
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }

// medians runs each fn once to warm up, then runs times in turns, and
// returns each fn's median time.
func medians(runs int, fns ...func() error) ([]time.Duration, error) {
	for _, fn := range fns {
		if err := fn(); err != nil {
			return nil, err
		}
	}
	ds := make([][]time.Duration, len(fns))
	for i := 0; i < max(runs, 1); i++ {
		for j, fn := range fns {
			start := time.Now()
			if err := fn(); err != nil {
				return nil, err
			}
			ds[j] = append(ds[j], time.Since(start))
		}
	}
	out := make([]time.Duration, len(fns))
	for j := range ds {
		slices.Sort(ds[j])
		out[j] = ds[j][len(ds[j])/2]
	}
	return out, nil
}

// clientSide aggregates the cohort the way FLIP's service does: every row
// into the client, per-column counts there, then the age and sex lookups by
// person id list and the modality lookup by accession list.
func clientSide(ctx context.Context, conn *pgx.Conn, sql string) error {
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		return err
	}
	fields := rows.FieldDescriptions()
	var frame [][]any
	for rows.Next() {
		v, err := rows.Values()
		if err != nil {
			rows.Close()
			return err
		}
		frame = append(frame, v)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	nonNull := make([]int, len(fields))
	pcol, acol := -1, -1
	for i, f := range fields {
		switch f.Name {
		case "person_id":
			pcol = i
		case "accession_id":
			acol = i
		}
	}
	persons := map[int64]bool{}
	accessions := map[string]bool{}
	for _, r := range frame {
		for i, v := range r {
			if v != nil {
				nonNull[i]++
			}
		}
		if pcol >= 0 && r[pcol] != nil {
			persons[toInt(r[pcol])] = true
		}
		if acol >= 0 && r[acol] != nil {
			accessions[fmt.Sprint(r[acol])] = true
		}
	}
	ids := make([]int64, 0, len(persons))
	for id := range persons {
		ids = append(ids, id)
	}
	if len(ids) > 0 {
		for _, q := range []string{
			`SELECT FLOOR(DATE_PART('year', AGE(CURRENT_DATE, p.birth_datetime)) / 10) * 10 AS age_group, COUNT(*) FROM omop.person p WHERE p.person_id = ANY($1) GROUP BY age_group ORDER BY age_group`,
			`SELECT p.gender_source_value, COUNT(*) FROM omop.person p WHERE p.person_id = ANY($1) GROUP BY p.gender_source_value`,
		} {
			if err := drain(ctx, conn, q, ids); err != nil {
				return err
			}
		}
	}
	if len(accessions) > 0 {
		acc := make([]string, 0, len(accessions))
		for a := range accessions {
			acc = append(acc, a)
		}
		if err := drain(ctx, conn, `SELECT COALESCE(c.concept_name, CAST(io.modality_concept_id AS VARCHAR)) AS modality, COUNT(DISTINCT io.image_occurrence_id)
FROM omop.image_occurrence io LEFT JOIN omop.concept c ON c.concept_id = io.modality_concept_id
WHERE io.accession_id = ANY($1) GROUP BY modality ORDER BY 2 DESC`, acc); err != nil {
			return err
		}
	}
	return nil
}

func drain(ctx context.Context, conn *pgx.Conn, q string, arg any) error {
	rows, err := conn.Query(ctx, q, arg)
	if err != nil {
		return err
	}
	for rows.Next() {
	}
	rows.Close()
	return rows.Err()
}

func toInt(v any) int64 {
	switch x := v.(type) {
	case int32:
		return int64(x)
	case int64:
		return x
	}
	n, _ := strconv.ParseInt(fmt.Sprint(v), 10, 64)
	return n
}

type service struct {
	cmd  *exec.Cmd
	url  string
	enc  string
	done chan struct{}
}

func startService(ctx context.Context, bin string, c *pgcluster.Cluster) (*service, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(bin)
	cmd.Env = []string{
		"DATA_ACCESS_API_ADDR=" + addr, "LOG_LEVEL=WARNING",
		"OMOP_DB_SERVICE_NAME=127.0.0.1", "OMOP_DB_PORT=" + strconv.Itoa(c.Port), "OMOP_DB_SSLMODE=disable",
		"DATA_ACCESS_POSTGRES_USER=" + pgcluster.Reader, "DATA_ACCESS_POSTGRES_PASSWORD=" + readerPassword,
		"OMOP_POSTGRES_DB=" + pgcluster.Database, "AES_KEY_BASE64=" + aesKey, "TRUST_INTERNAL_SERVICE_KEY=" + internalKey,
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start data-access-api (build it with make build): %w", err)
	}
	s := &service{cmd: cmd, url: "http://" + addr, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(s.done) }()
	cipher, _ := envelope.NewFromBase64(aesKey)
	s.enc, _ = cipher.Seal([]byte("1f0e2d3c-4b5a-4697-8877-665544332211"), envelope.ProjectIDContext)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(s.url + "/health")
		if err == nil {
			resp.Body.Close()
			return s, nil
		}
		select {
		case <-s.done:
			return nil, errors.New("data-access-api exited during startup")
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, errors.New("data-access-api not answering")
		}
	}
}

func (s *service) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// cohort posts a statistics request and returns the record count.
func (s *service) cohort(ctx context.Context, sql string) (int64, error) {
	body, _ := json.Marshal(map[string]string{"encrypted_project_id": s.enc, "query_id": "bench", "query_name": "bench",
		"query": sql, "trust_id": "bench"})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.url+"/cohort", bytes.NewReader(body))
	req.Header.Set(mesh.HeaderInternalKey, internalKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("POST /cohort: %d %s", resp.StatusCode, b)
	}
	var out struct {
		RecordCount int64 `json:"record_count"`
		Suppressed  bool  `json:"suppressed"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return 0, err
	}
	if out.Suppressed {
		return 0, errors.New("POST /cohort: suppressed")
	}
	return out.RecordCount, nil
}

// resetPeak resets the kernel's peak-RSS mark (VmHWM) of the service.
func (s *service) resetPeak() error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", s.cmd.Process.Pid), []byte("5"), 0)
}

// peakRSS reads the service's VmHWM in MiB.
func (s *service) peakRSS() (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseFloat(f[1], 64)
			return kb / 1024, err
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}
