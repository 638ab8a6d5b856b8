// Command bench-fl measures fl-client's artifact transfer against a plain
// HTTP copy of the same bytes over loopback, in the same run: a random file
// (1 GiB by default) is downloaded and uploaded by the fl-client binary
// through an in-process FL server (ArtifactStore, upload store and client
// authentication), and by a raw io.Copy GET and PUT against a plain file
// handler. It reports the median MB/s of each, their ratio (goal >= 0.7x),
// fl-client's peak RSS (goal <= 128 MiB), and a download whose connections
// are cut three times through a loopback proxy, which must resume and verify.
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/flip-trust/node/services/fl-client/internal/privacy"
	"github.com/flip-trust/node/shared/flproto"
	"github.com/flip-trust/node/shared/flproto/cutproxy"
)

const (
	clientName = "Trust_1"
	secret     = "bench-fl-secret-0123456789abcdef0123456789abcdef"
	ratioGoal  = 0.7
	rssGoalMiB = 128
)

type config struct {
	size      int64
	rounds    int
	flClient  string
	chunkSize int64
	parallel  int
	dir       string
	cuts      int
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-fl:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	var cfg config
	fs := flag.NewFlagSet("bench-fl", flag.ContinueOnError)
	fs.Int64Var(&cfg.size, "size", 1<<30, "bytes in the test file")
	fs.IntVar(&cfg.rounds, "rounds", 3, "timed rounds of each direction and side")
	fs.StringVar(&cfg.flClient, "fl-client", "bin/fl-client", "fl-client binary")
	fs.Int64Var(&cfg.chunkSize, "chunk-size", flproto.DefaultChunkSize, "chunk size of the artifacts")
	fs.IntVar(&cfg.parallel, "parallel", 2, "fl-client's --parallel")
	fs.StringVar(&cfg.dir, "dir", "", "directory for the temporary files (default: the system's)")
	fs.IntVar(&cfg.cuts, "cuts", 3, "connection cuts in the interrupted download")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := os.Stat(cfg.flClient); err != nil {
		return fmt.Errorf("fl-client binary: %w (build it with make build)", err)
	}
	dir, err := os.MkdirTemp(cfg.dir, "bench-fl-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b := &bench{cfg: cfg, dir: dir}
	return b.run(ctx)
}

type bench struct {
	cfg config
	dir string
	src string // the test file
	id  string // its artifact id

	dl       *flproto.ArtifactStore
	chunkGet atomic.Int64           // chunk GETs the FL server answered
	upload   atomic.Pointer[upSide] // the upload side, fresh for every round
	flURL    string
	rawURL   string
	maxRSS   int64 // KiB, over every fl-client run
}

// upSide is one round's upload store on the FL server.
type upSide struct {
	dir     string
	handler http.Handler
}

func (b *bench) run(ctx context.Context) error {
	fmt.Printf("bench-fl: %d MiB random file, %d rounds, chunk %d KiB, fl-client --parallel %d\n",
		b.cfg.size>>20, b.cfg.rounds, b.cfg.chunkSize>>10, b.cfg.parallel)
	if err := b.makeFile(); err != nil {
		return err
	}
	stopServers, err := b.startServers(ctx)
	if err != nil {
		return err
	}
	defer stopServers()

	var flGet, rawGet, flPut, rawPut []float64
	for round := range b.cfg.rounds {
		// Alternate which side goes first, so that neither always finds a warmer cache.
		sides := []func() error{
			func() error { return b.timed(&flGet, b.flDownload) },
			func() error { return b.timed(&rawGet, b.rawDownload) },
			func() error { return b.timed(&flPut, b.flUpload) },
			func() error { return b.timed(&rawPut, b.rawUpload) },
		}
		if round%2 == 1 {
			sides[0], sides[1], sides[2], sides[3] = sides[1], sides[0], sides[3], sides[2]
		}
		for _, side := range sides {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := side(); err != nil {
				return err
			}
		}
		fmt.Printf("  round %d: get fl %.0f raw %.0f MB/s; put fl %.0f raw %.0f MB/s\n",
			round+1, flGet[round], rawGet[round], flPut[round], rawPut[round])
	}
	report("download", median(flGet), median(rawGet))
	report("upload", median(flPut), median(rawPut))
	rssMiB := float64(b.maxRSS) / 1024
	fmt.Printf("fl-client peak RSS: %.1f MiB (goal <= %d MiB) %s\n", rssMiB, rssGoalMiB, verdict(rssMiB <= rssGoalMiB))
	for _, line := range dpFilterLines(ctx, b) {
		fmt.Println(line)
	}
	return b.interrupted(ctx)
}

// dpFilterLines measures the site's DP filter (the update local − global,
// L2 clipping and Gaussian noise, streamed through two F32 models of
// dpBytes each) and reports its throughput in GB/s of model bytes.
func dpFilterLines(ctx context.Context, _ *bench) []string {
	cfg := privacy.Defaults()
	cfg.ClipNorm, cfg.NoiseMultiplier = 1, 1.1
	gbps, err := privacy.MeasureThroughput(ctx, dpBytes, cfg)
	if err != nil {
		return []string{"DP filter: " + err.Error()}
	}
	return []string{fmt.Sprintf("DP filter (clip 1.0, noise multiplier 1.1) over a %d MiB F32 update: %.2f GB/s", dpBytes>>20, gbps)}
}

// dpBytes is the model size the DP filter is measured on.
const dpBytes = 256 << 20

func report(what string, fl, raw float64) {
	ratio := fl / raw
	fmt.Printf("%s: fl-client %.0f MB/s, raw HTTP %.0f MB/s, ratio %.2fx (goal >= %.1fx) %s\n",
		what, fl, raw, ratio, ratioGoal, verdict(ratio >= ratioGoal))
}

func verdict(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISSED"
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// timed runs fn and appends its throughput in MB/s.
func (b *bench) timed(into *[]float64, fn func() error) error {
	start := time.Now()
	if err := fn(); err != nil {
		return err
	}
	*into = append(*into, float64(b.cfg.size)/1e6/time.Since(start).Seconds())
	return nil
}

// makeFile writes the random test file and stores it on the FL server's
// download side (untimed).
func (b *bench) makeFile() error {
	b.src = filepath.Join(b.dir, "source.bin")
	f, err := os.Create(b.src)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	r := rand.New(rand.NewChaCha8([32]byte{1}))
	buf := make([]byte, 1<<20)
	for left := b.cfg.size; left > 0; {
		n := min(left, int64(len(buf)))
		for i := int64(0); i < n; i += 8 {
			v := r.Uint64()
			for j := int64(0); j < 8 && i+j < n; j++ {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		if _, err := w.Write(buf[:n]); err != nil {
			f.Close()
			return err
		}
		left -= n
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	b.dl, err = flproto.NewArtifactStore(filepath.Join(b.dir, "fl-artifacts"), b.cfg.chunkSize)
	if err != nil {
		return err
	}
	in, err := os.Open(b.src)
	if err != nil {
		return err
	}
	defer in.Close()
	m, err := b.dl.Put(context.Background(), in)
	if err != nil {
		return err
	}
	b.id = m.ID
	return nil
}

// startServers starts the FL server and the plain file server on loopback.
func (b *bench) startServers(ctx context.Context) (func(), error) {
	auth := flproto.NewAuthenticator(map[string][sha256.Size]byte{clientName: flproto.HashSecret(secret)})
	download := flproto.NewArtifactHandler(b.dl, nil)
	if err := b.freshUploadSide(); err != nil {
		return nil, err
	}
	fl := auth.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, flproto.PathPrefix+"/artifacts/") {
			if strings.Contains(r.URL.Path, "/chunks/") {
				b.chunkGet.Add(1)
			}
			download.ServeHTTP(w, r)
			return
		}
		b.upload.Load().handler.ServeHTTP(w, r)
	}))
	raw := http.HandlerFunc(b.serveRaw)

	var servers []*http.Server
	var wg sync.WaitGroup
	for _, h := range []http.Handler{fl, raw} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
		servers = append(servers, srv)
		wg.Go(func() { _ = srv.Serve(ln) })
		if b.flURL == "" {
			b.flURL = "http://" + ln.Addr().String()
		} else {
			b.rawURL = "http://" + ln.Addr().String() + "/file"
		}
	}
	return func() {
		for _, s := range servers {
			_ = s.Close()
		}
		wg.Wait()
	}, nil
}

// freshUploadSide gives the FL server an empty artifact and upload store,
// so that the next upload moves every byte again.
func (b *bench) freshUploadSide() error {
	d, err := os.MkdirTemp(b.dir, "fl-upload-")
	if err != nil {
		return err
	}
	store, err := flproto.NewArtifactStore(filepath.Join(d, "artifacts"), b.cfg.chunkSize)
	if err != nil {
		return err
	}
	uploads, err := flproto.NewUploads(filepath.Join(d, "uploads"), store, 0)
	if err != nil {
		return err
	}
	if old := b.upload.Swap(&upSide{dir: d, handler: flproto.NewArtifactHandler(store, uploads)}); old != nil {
		return os.RemoveAll(old.dir)
	}
	return nil
}

// serveRaw is the baseline server: GET sends the file with io.Copy
// (sendfile), PUT copies the body into a file and syncs it, as the FL
// server's store does.
func (b *bench) serveRaw(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		f, err := os.Open(b.src)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer f.Close()
		w.Header().Set("Content-Length", fmt.Sprint(b.cfg.size))
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = io.Copy(w, f)
	case http.MethodPut:
		f, err := os.CreateTemp(b.dir, "raw-put-")
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer os.Remove(f.Name())
		defer f.Close()
		if _, err := io.Copy(f, r.Body); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		if err := f.Sync(); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

// rawDownload GETs the file with io.Copy into a file and syncs it.
func (b *bench) rawDownload() error {
	resp, err := http.Get(b.rawURL)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dst := filepath.Join(b.dir, "raw-get.bin")
	defer os.Remove(dst)
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(f, resp.Body)
	if err != nil {
		return err
	}
	if n != b.cfg.size {
		return fmt.Errorf("raw download: %d bytes", n)
	}
	return f.Sync()
}

// rawUpload PUTs the file with io.Copy (the transport's own copy).
func (b *bench) rawUpload() error {
	f, err := os.Open(b.src)
	if err != nil {
		return err
	}
	defer f.Close()
	req, err := http.NewRequest(http.MethodPut, b.rawURL, f)
	if err != nil {
		return err
	}
	req.ContentLength = b.cfg.size
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("raw upload: %s", resp.Status)
	}
	return nil
}

func (b *bench) flDownload() error {
	dst := filepath.Join(b.dir, "fl-get.bin")
	defer os.Remove(dst)
	_, err := b.flClient(context.Background(), b.flURL, "get", "--quiet", "--parallel", fmt.Sprint(b.cfg.parallel), "--id", b.id, "--out", dst)
	return err
}

func (b *bench) flUpload() error {
	if err := b.freshUploadSide(); err != nil {
		return err
	}
	out, err := b.flClient(context.Background(), b.flURL, "put", "--quiet", "--parallel", fmt.Sprint(b.cfg.parallel), "--chunk-size", fmt.Sprint(b.cfg.chunkSize), b.src)
	if err != nil {
		return err
	}
	if got := strings.TrimSpace(out); got != b.id {
		return fmt.Errorf("fl-client put answered %q, want %s", got, b.id)
	}
	return nil
}

// flClient runs `fl-client artifact <args>` against server and records its
// peak RSS.
func (b *bench) flClient(ctx context.Context, server string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, b.cfg.flClient, append([]string{"artifact", args[0], "--server", server}, args[1:]...)...)
	cmd.Env = []string{"FL_CLIENT_NAME=" + clientName, "FL_CLIENT_SECRET=" + secret, "PATH=" + os.Getenv("PATH")}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			b.maxRSS = max(b.maxRSS, ru.Maxrss)
		}
	}
	if err != nil {
		return "", fmt.Errorf("fl-client %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// interrupted downloads the file through a proxy that cuts every connection
// three times, mid-chunk, and checks the result independently.
func (b *bench) interrupted(ctx context.Context) error {
	proxy, err := cutproxy.New(strings.TrimPrefix(b.flURL, "http://"))
	if err != nil {
		return err
	}
	defer proxy.Close()
	every := b.cfg.size/int64(b.cfg.cuts+1) + b.cfg.chunkSize/2
	proxy.CutEvery(every, b.cfg.cuts)
	before := b.chunkGet.Load()
	dst := filepath.Join(b.dir, "fl-cut.bin")
	defer os.Remove(dst)
	start := time.Now()
	_, err = b.flClient(ctx, proxy.URL(), "get", "--quiet", "--parallel", fmt.Sprint(b.cfg.parallel), "--id", b.id, "--out", dst)
	if err != nil {
		return fmt.Errorf("interrupted download: %w", err)
	}
	elapsed := time.Since(start)
	chunks := flproto.ChunkCount(b.cfg.size, b.cfg.chunkSize)
	f, err := os.Open(dst)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	sum := flproto.ArtifactID(hex.EncodeToString(h.Sum(nil)))
	ok := sum == b.id && proxy.Cuts() == b.cfg.cuts
	fmt.Printf("interrupted download: %d connection cuts, %d chunk requests for %d chunks, %s; SHA-256 %s %s\n",
		proxy.Cuts(), b.chunkGet.Load()-before, chunks, elapsed.Round(time.Millisecond), matches(sum == b.id), verdict(ok))
	if !ok {
		return errors.New("the interrupted download did not resume to a verified file")
	}
	return nil
}

func matches(ok bool) string {
	if ok {
		return "verified"
	}
	return "DIFFERS"
}
