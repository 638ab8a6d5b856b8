// Command bench-dispatch measures the task path dev-hub → trust-api → dev-hub
// with real processes on loopback: it starts dev-hub, the internal-service
// stand-in and one trust-api, pushes no-op tasks (get_imaging_status against
// the stand-in, which answers at once) through them and prints throughput,
// the dispatch overhead beyond the poll wait (hub dispatch to hub result,
// both stamped by the hub), a bare round trip to the same hub measured in the
// same run, the ratio between the two, and trust-api's peak RSS.
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
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-dispatch:", err)
		os.Exit(1)
	}
}

type options struct {
	trustAPI, devHub string
	tasks, workers   int
	rate             float64
	poll             time.Duration
}

func run() error {
	var o options
	flag.StringVar(&o.trustAPI, "trust-api", "bin/trust-api", "trust-api binary")
	flag.StringVar(&o.devHub, "dev-hub", "bin/dev-hub", "dev-hub binary")
	flag.IntVar(&o.tasks, "tasks", 2000, "tasks per phase")
	flag.IntVar(&o.workers, "workers", 8, "trust-api TASK_WORKERS")
	flag.Float64Var(&o.rate, "rate", 200, "submission rate (tasks/s) in the latency phase")
	flag.DurationVar(&o.poll, "poll", 50*time.Millisecond, "trust-api poll interval")
	flag.Parse()
	if o.tasks < 1 || o.workers < 1 || o.rate <= 0 || o.poll <= 0 {
		return errors.New("-tasks, -workers, -rate and -poll must be positive")
	}

	work, err := os.MkdirTemp("", "bench-dispatch-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	b := &bench{o: o, work: work, token: "bench-admin-token-0123456789abcdef0123",
		aesKey: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", client: &http.Client{Timeout: 30 * time.Second}}
	defer b.stopAll()
	return b.run()
}

type bench struct {
	o                         options
	work, token, aesKey       string
	hubAddr, adminAddr, sAddr string
	client                    *http.Client
	procs                     []*exec.Cmd
	trust                     *exec.Cmd
	trustID, trustKey, intKey string
}

func (b *bench) run() error {
	var err error
	for _, p := range []*string{&b.hubAddr, &b.adminAddr, &b.sAddr} {
		if *p, err = freeAddr(); err != nil {
			return err
		}
	}
	if _, err := b.start(b.o.devHub, []string{
		"DEV_HUB_ADDR=" + b.hubAddr, "DEV_HUB_ADMIN_ADDR=" + b.adminAddr, "DEV_HUB_ADMIN_TOKEN=" + b.token,
		"DEV_HUB_DATA_DIR=" + filepath.Join(b.work, "hub"), "AES_KEY_BASE64=" + b.aesKey, "LOG_LEVEL=WARN",
		"RATE_LIMIT_PENDING_PER_MIN=0", "RATE_LIMIT_HEARTBEAT_PER_MIN=0", "RATE_LIMIT_RESULT_PER_MIN=0",
	}, "dev-hub.log", "serve"); err != nil {
		return err
	}
	if err := waitHTTP("http://"+b.adminAddr+"/health", 20*time.Second); err != nil {
		return err
	}
	var reg struct {
		TrustID            string `json:"trust_id"`
		APIKey             string `json:"api_key"`
		InternalServiceKey string `json:"internal_service_key"`
	}
	if err := b.admin(http.MethodPost, "/admin/trusts", map[string]any{"name": "bench", "hub_api_url": "http://" + b.hubAddr + "/api"}, &reg); err != nil {
		return fmt.Errorf("register trust: %w", err)
	}
	b.trustID, b.trustKey, b.intKey = reg.TrustID, reg.APIKey, reg.InternalServiceKey
	if _, err := b.start(b.o.devHub, []string{"STANDIN_ADDR=" + b.sAddr, "TRUST_INTERNAL_SERVICE_KEY=" + b.intKey, "LOG_LEVEL=WARN"}, "standin.log", "standin"); err != nil {
		return err
	}
	if err := waitHTTP("http://"+b.sAddr+"/health", 20*time.Second); err != nil {
		return err
	}

	// Baseline: bare round trips to the same hub, measured before trust-api runs.
	bare, err := b.bareRoundTrips(500)
	if err != nil {
		return err
	}

	trustAddr, err := freeAddr()
	if err != nil {
		return err
	}
	b.trust, err = b.start(b.o.trustAPI, []string{
		"CENTRAL_HUB_API_URL=http://" + b.hubAddr + "/api", "TRUST_API_KEY=" + b.trustKey, "TRUST_API_KEY_HEADER=Authorization",
		"AES_KEY_BASE64=" + b.aesKey, "TRUST_INTERNAL_SERVICE_KEY=" + b.intKey, "EXPECTED_TRUST_ID=" + b.trustID,
		"DATA_ACCESS_API_URL=http://" + b.sAddr, "IMAGING_API_URL=http://" + b.sAddr, "XNAT_URL=http://" + b.sAddr,
		"OMOP_DB_HOST=127.0.0.1", "OMOP_DB_PORT=1", "LOG_LEVEL=WARN",
		"POLL_INTERVAL_SECONDS=" + strconv.FormatFloat(b.o.poll.Seconds(), 'f', -1, 64), "HEARTBEAT_INTERVAL_SECONDS=1",
		"TASK_WORKERS=" + strconv.Itoa(b.o.workers), "TRUST_API_ADDR=" + trustAddr, "TRUST_API_DATA_DIR=" + filepath.Join(b.work, "trust"),
	}, "trust-api.log")
	if err != nil {
		return err
	}
	if err := waitHTTP("http://"+trustAddr+"/health", 20*time.Second); err != nil {
		return err
	}

	fmt.Printf("bench-dispatch: %d no-op tasks per phase, trust-api TASK_WORKERS=%d, poll interval %s\n", b.o.tasks, b.o.workers, b.o.poll)
	fmt.Printf("baseline  bare hub round trip (authenticated GET /api/tasks/pending, empty queue, %d calls): p50 %s  p99 %s\n",
		len(bare), pct(bare, 50), pct(bare, 99))

	// Phase 1: throughput, every task queued up front.
	ids, err := b.submit(b.o.tasks, 0)
	if err != nil {
		return err
	}
	tp, err := b.collect(ids, 5*time.Minute)
	if err != nil {
		return err
	}
	span := tp.lastDone.Sub(tp.firstDispatch)
	fmt.Printf("throughput %d tasks queued up front: %.0f tasks/s (first dispatch to last result %s); overhead p50 %s p99 %s (includes queueing behind a 50-task batch)\n",
		len(ids), float64(len(ids))/span.Seconds(), span.Round(time.Millisecond), pct(tp.overhead, 50), pct(tp.overhead, 99))

	// Phase 2: latency, tasks arriving at a steady rate.
	ids, err = b.submit(b.o.tasks, b.o.rate)
	if err != nil {
		return err
	}
	lat, err := b.collect(ids, 5*time.Minute)
	if err != nil {
		return err
	}
	p50, p99 := pct(lat.overhead, 50), pct(lat.overhead, 99)
	fmt.Printf("latency    %d tasks at %.0f/s: dispatch overhead beyond the poll wait p50 %s  p99 %s  max %s\n",
		len(ids), b.o.rate, p50, p99, pct(lat.overhead, 100))
	fmt.Printf("ratio      overhead / bare round trip: p50 %.1fx  p99 %.1fx\n",
		float64(p50)/float64(pct(bare, 50)), float64(p99)/float64(pct(bare, 99)))
	rss, err := peakRSS(b.trust.Process.Pid)
	if err != nil {
		return err
	}
	fmt.Printf("memory     trust-api peak RSS %.1f MiB\n", float64(rss)/1024)
	goal := 10 * time.Millisecond
	verdict := "met"
	if p99 > goal {
		verdict = "NOT met"
	}
	fmt.Printf("goal       overhead p99 <= %s: %s (p99 %s)\n", goal, verdict, p99)
	return nil
}

func (b *bench) start(bin string, env []string, logName string, args ...string) (*exec.Cmd, error) {
	logFile, err := os.Create(filepath.Join(b.work, logName))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	b.procs = append(b.procs, cmd)
	return cmd, nil
}

func (b *bench) stopAll() {
	for i := len(b.procs) - 1; i >= 0; i-- {
		p := b.procs[i]
		_ = p.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = p.Process.Kill()
		}
	}
}

func (b *bench) admin(method, path string, body, v any) error {
	var rd io.Reader
	if body != nil {
		buf, _ := json.Marshal(body)
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequest(method, "http://"+b.adminAddr+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+b.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 500))
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, msg)
	}
	if v == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func (b *bench) bareRoundTrips(n int) ([]time.Duration, error) {
	out := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		req, _ := http.NewRequest(http.MethodGet, "http://"+b.hubAddr+"/api/tasks/pending", nil)
		req.Header.Set("Authorization", b.trustKey)
		start := time.Now()
		resp, err := b.client.Do(req)
		if err != nil {
			return nil, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("baseline: HTTP %d", resp.StatusCode)
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}

// submit enqueues n no-op tasks, at rate per second (0 = as fast as possible).
func (b *bench) submit(n int, rate float64) ([]string, error) {
	ids := make([]string, 0, n)
	start := time.Now()
	for i := 0; i < n; i++ {
		if rate > 0 {
			time.Sleep(time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))))
		}
		var task struct {
			ID string `json:"id"`
		}
		err := b.admin(http.MethodPost, "/admin/tasks", map[string]any{
			"trust_id": b.trustID, "task_type": "get_imaging_status",
			"payload": map[string]any{"imaging_project_id": "0b6f7c1e-8d2a-4f3b-9c5d-1e2f3a4b5c6d", "encoded_query": "U0VMRUNUIDE"},
		}, &task)
		if err != nil {
			return nil, fmt.Errorf("submit task %d: %w", i, err)
		}
		ids = append(ids, task.ID)
	}
	return ids, nil
}

type phase struct {
	overhead                []time.Duration
	firstDispatch, lastDone time.Time
}

// collect waits for every task to complete and reads the hub's timestamps.
// While tasks are in flight it asks only for the trust's PENDING and
// IN_PROGRESS tasks, which the hub reads through its indexes, so the wait does
// not load the hub that is being measured; the full listing with the
// timestamps is read once, after the last result.
func (b *bench) collect(ids []string, limit time.Duration) (phase, error) {
	var p phase
	deadline := time.Now().Add(limit)
	type row struct {
		ID           string    `json:"id"`
		Status       string    `json:"status"`
		DispatchedAt time.Time `json:"dispatched_at"`
		CompletedAt  time.Time `json:"completed_at"`
	}
	for {
		open := 0
		for _, st := range []string{"PENDING", "IN_PROGRESS"} {
			var tasks []row
			if err := b.admin(http.MethodGet, "/admin/tasks?trust="+b.trustID+"&status="+st, nil, &tasks); err != nil {
				return p, err
			}
			open += len(tasks)
		}
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			return p, fmt.Errorf("%d tasks still not completed after %s", open, limit)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var tasks []row
	if err := b.admin(http.MethodGet, "/admin/tasks?trust="+b.trustID, nil, &tasks); err != nil {
		return p, err
	}
	byID := make(map[string]row, len(tasks))
	for _, t := range tasks {
		byID[t.ID] = t
	}
	for _, id := range ids {
		t, ok := byID[id]
		switch {
		case !ok:
			return p, fmt.Errorf("task %s missing from the hub", id)
		case t.Status != "COMPLETED":
			return p, fmt.Errorf("task %s %s", t.ID, t.Status)
		}
		p.overhead = append(p.overhead, t.CompletedAt.Sub(t.DispatchedAt))
		if p.firstDispatch.IsZero() || t.DispatchedAt.Before(p.firstDispatch) {
			p.firstDispatch = t.DispatchedAt
		}
		if t.CompletedAt.After(p.lastDone) {
			p.lastDone = t.CompletedAt
		}
	}
	return p, nil
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	if i < 1 {
		i = 1
	}
	if i > len(s) {
		i = len(s)
	}
	return s[i-1].Round(10 * time.Microsecond)
}

// peakRSS reads VmHWM (KiB) of a running process.
func peakRSS(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				return strconv.Atoi(f[1])
			}
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func waitHTTP(url string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not answering after %s", url, d)
}
