// Package orthanctest runs real Orthanc servers as child processes for
// integration tests: a PACS and a STAGING server that know each other as
// DICOM modalities, as in a trust where the staging Orthanc pulls studies
// from the hospital PACS with C-FIND and C-MOVE.
//
// Each server gets a generated JSON configuration, free HTTP and DICOM
// ports (reached on 127.0.0.1), its own storage directory and log file
// under one temporary directory, and HTTP basic authentication with its
// own credentials. Servers can be stopped, killed and restarted on the same
// ports and storage to simulate outages. Orthanc comes from the Debian
// package (make deps installs it).
package orthanctest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// AE titles of the two servers; each is also the name under which the other
// server lists it in DicomModalities.
const (
	PACSAET    = "PACS"
	StagingAET = "STAGING"
)

// StableAge is the configured number of seconds after the last received
// instance before Orthanc marks a study stable.
const StableAge = 1

// DicomScuTimeout is the configured DIMSE timeout in seconds of the servers'
// outgoing associations (C-ECHO, C-FIND, C-MOVE, C-STORE).
const DicomScuTimeout = 5

const (
	readyTimeout = 30 * time.Second
	stopTimeout  = 15 * time.Second
	startTries   = 3
)

// Server is one Orthanc process with its configuration and storage.
type Server struct {
	// Name is the server's name and DICOM AE title ("PACS" or "STAGING").
	Name string
	// URL is the REST API's base URL on loopback (no trailing slash).
	URL string
	// AET is the server's DICOM AE title.
	AET string
	// HTTPPort and DICOMPort are the listening ports. Orthanc binds every
	// interface but only serves REST requests from loopback, and DICOM
	// peers only from 127.0.0.1.
	HTTPPort, DICOMPort int
	// User and Password are the registered REST API credentials.
	User, Password string
	// Dir holds the configuration, the storage and the log.
	Dir string
	// LogPath is the file receiving the process's output (appended to on
	// every start).
	LogPath string

	bin  string
	mu   sync.Mutex
	proc *process // nil while stopped
}

// process is one run of a server.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // exit status; read after done is closed
}

// Pair is a running PACS and STAGING server.
type Pair struct {
	PACS, Staging *Server
	dir           string
}

// Binary locates the Orthanc executable: $ORTHANC_BIN, /usr/sbin/Orthanc or
// Orthanc on PATH.
func Binary() (string, error) {
	if b := os.Getenv("ORTHANC_BIN"); b != "" {
		return b, nil
	}
	if _, err := os.Stat("/usr/sbin/Orthanc"); err == nil {
		return "/usr/sbin/Orthanc", nil
	}
	if p, err := exec.LookPath("Orthanc"); err == nil {
		return p, nil
	}
	return "", errors.New("orthanctest: Orthanc not found (install the orthanc package: make deps)")
}

// StartPair writes configurations for a PACS and a STAGING server into a new
// temporary directory and starts both. Close stops them and removes the
// directory.
func StartPair(ctx context.Context) (*Pair, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "flip-orthanc-")
	if err != nil {
		return nil, fmt.Errorf("orthanctest: %w", err)
	}
	p := &Pair{dir: dir}
	var lastErr error
	for range startTries { // a free port can be taken between probing and binding
		if lastErr = p.start(ctx, bin); lastErr == nil {
			return p, nil
		}
		p.killAll()
		if ctx.Err() != nil {
			break
		}
	}
	_ = os.RemoveAll(dir)
	return nil, lastErr
}

func (p *Pair) start(ctx context.Context, bin string) error {
	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	p.PACS = &Server{Name: PACSAET, AET: PACSAET, HTTPPort: ports[0], DICOMPort: ports[1],
		User: "pacs-user", Password: "pacs-password", Dir: filepath.Join(p.dir, "pacs"), bin: bin}
	p.Staging = &Server{Name: StagingAET, AET: StagingAET, HTTPPort: ports[2], DICOMPort: ports[3],
		User: "staging-user", Password: "staging-password", Dir: filepath.Join(p.dir, "staging"), bin: bin}
	for _, s := range []*Server{p.PACS, p.Staging} {
		other := p.Staging
		if s == p.Staging {
			other = p.PACS
		}
		s.URL = "http://127.0.0.1:" + strconv.Itoa(s.HTTPPort)
		s.LogPath = filepath.Join(s.Dir, "orthanc.log")
		if err := os.RemoveAll(s.Dir); err != nil {
			return fmt.Errorf("orthanctest: %w", err)
		}
		if err := os.MkdirAll(filepath.Join(s.Dir, "db"), 0o700); err != nil {
			return fmt.Errorf("orthanctest: %w", err)
		}
		if err := s.writeConfig(other); err != nil {
			return err
		}
	}
	if err := p.PACS.Start(ctx); err != nil {
		return err
	}
	return p.Staging.Start(ctx)
}

// Dir is the temporary directory holding both servers' files.
func (p *Pair) Dir() string { return p.dir }

// Close kills both servers and removes their files.
func (p *Pair) Close() {
	p.killAll()
	_ = os.RemoveAll(p.dir)
}

func (p *Pair) killAll() {
	for _, s := range []*Server{p.PACS, p.Staging} {
		if s != nil {
			s.Kill()
		}
	}
}

// config is the part of Orthanc's configuration the servers set.
func (s *Server) config(other *Server) map[string]any {
	db := filepath.Join(s.Dir, "db")
	return map[string]any{
		"Name":                   s.Name,
		"StorageDirectory":       db,
		"IndexDirectory":         db,
		"Plugins":                []string{},
		"LuaScripts":             []string{},
		"HttpServerEnabled":      true,
		"HttpPort":               s.HTTPPort,
		"RemoteAccessAllowed":    false,
		"AuthenticationEnabled":  true,
		"RegisteredUsers":        map[string]string{s.User: s.Password},
		"HttpDescribeErrors":     true,
		"OrthancExplorerEnabled": false,
		"WebDavEnabled":          false,
		"DicomServerEnabled":     true,
		"DicomAet":               s.AET,
		"DicomPort":              s.DICOMPort,
		"DicomCheckCalledAet":    true,
		"DicomCheckModalityHost": true,
		"DicomAlwaysAllowEcho":   false,
		"DicomAlwaysAllowStore":  false,
		"DicomScuTimeout":        DicomScuTimeout,
		"DicomModalities": map[string]any{
			other.AET: map[string]any{
				"AET": other.AET, "Host": "127.0.0.1", "Port": other.DICOMPort,
				"AllowEcho": true, "AllowFind": true, "AllowMove": true, "AllowGet": true, "AllowStore": true,
			},
		},
		"StableAge":      StableAge,
		"SaveJobs":       false,
		"ConcurrentJobs": 2,
		"HttpTimeout":    60,
		"DeidentifyLogs": true,
		// Without fsync a killed server still keeps everything it stored
		// (the kernel holds the data); only a machine crash would lose it.
		"SyncStorageArea": false,
	}
}

func (s *Server) writeConfig(other *Server) error {
	b, err := json.MarshalIndent(s.config(other), "", "  ")
	if err != nil {
		return fmt.Errorf("orthanctest: %w", err)
	}
	if err := os.WriteFile(s.configPath(), b, 0o600); err != nil {
		return fmt.Errorf("orthanctest: %w", err)
	}
	return nil
}

func (s *Server) configPath() string { return filepath.Join(s.Dir, "orthanc.json") }

// Start starts the server (again) on its ports and storage and waits until
// its REST API answers and its DICOM port accepts connections. Starting a
// running server does nothing.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return nil
	}
	logf, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("orthanctest: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(s.bin, s.configPath())
	// Debian's DCMTK leaves Nagle's algorithm on, which delays every DIMSE
	// message on loopback by tens of milliseconds.
	cmd.Env = append(os.Environ(), "TCP_NODELAY=1")
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("orthanctest: start %s: %w", s.Name, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	s.proc = p
	if err := s.waitReady(ctx, p); err != nil {
		s.killLocked()
		return err
	}
	return nil
}

func (s *Server) waitReady(ctx context.Context, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	var lastErr error
	for {
		if lastErr = s.probe(ctx, client); lastErr == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("orthanctest: %s exited during startup (%v): %s", s.Name, p.err, s.logTail(5))
		case <-ctx.Done():
			return fmt.Errorf("orthanctest: %s not ready: %w (last: %v)", s.Name, ctx.Err(), lastErr)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *Server) probe(ctx context.Context, client *http.Client) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/system", nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(s.User, s.Password)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /system: %s", resp.Status)
	}
	conn, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", "127.0.0.1:"+strconv.Itoa(s.DICOMPort))
	if err != nil {
		return err
	}
	return conn.Close()
}

// Running reports whether the server's process is running.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil
}

// PID returns the process id of the running server, 0 while it is stopped.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return 0
	}
	return s.proc.cmd.Process.Pid
}

// Stop shuts the server down gracefully (SIGTERM) and waits for it; Orthanc
// takes about four seconds. The process is killed if it has not exited
// after 15 s.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return nil
	}
	_ = s.proc.cmd.Process.Signal(syscall.SIGTERM)
	_ = syscall.Kill(-s.proc.cmd.Process.Pid, syscall.SIGCONT) // in case it is paused
	select {
	case <-s.proc.done:
	case <-time.After(stopTimeout):
		s.killLocked()
		return fmt.Errorf("orthanctest: %s ignored SIGTERM for %v and was killed", s.Name, stopTimeout)
	}
	s.proc = nil
	return nil
}

// Kill stops the server at once (SIGKILL), as a crash or an outage would.
// Its storage stays usable: Start brings it back with the same content.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killLocked()
}

func (s *Server) killLocked() {
	if s.proc == nil {
		return
	}
	_ = syscall.Kill(-s.proc.cmd.Process.Pid, syscall.SIGKILL)
	<-s.proc.done
	s.proc = nil
}

// Pause freezes the running server (SIGSTOP): its ports still accept TCP
// connections but nothing answers, as with a hung PACS. Resume undoes it;
// Kill and Stop work on a paused server too.
func (s *Server) Pause() error { return s.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() error { return s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return fmt.Errorf("orthanctest: %s is not running", s.Name)
	}
	if err := syscall.Kill(-s.proc.cmd.Process.Pid, sig); err != nil {
		return fmt.Errorf("orthanctest: signal %s: %w", s.Name, err)
	}
	return nil
}

// logTail returns the last n lines of the server's log, joined with "; ".
func (s *Server) logTail(n int) string {
	b, err := os.ReadFile(s.LogPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}

// freePorts returns n distinct TCP ports that were free on all interfaces
// (Orthanc binds 0.0.0.0).
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", ":0")
		if err != nil {
			return nil, fmt.Errorf("orthanctest: free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Do sends a REST request with the server's credentials. A non-nil body is
// sent as JSON; a 2xx answer is decoded into out when out is not nil.
// Other answers are errors that carry the status and the start of the body.
func (s *Server) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("orthanctest: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.URL+path, rd)
	if err != nil {
		return fmt.Errorf("orthanctest: %w", err)
	}
	req.SetBasicAuth(s.User, s.Password)
	resp, err := restClient.Do(req)
	if err != nil {
		return fmt.Errorf("orthanctest: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("orthanctest: %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		if len(b) > 300 {
			b = b[:300]
		}
		return fmt.Errorf("orthanctest: %s %s: %s: %s", method, path, resp.Status, strings.Join(strings.Fields(string(b)), " "))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("orthanctest: %s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

var restClient = &http.Client{Timeout: 60 * time.Second}

// Clear deletes every patient (and so every study and instance) the server
// holds.
func (s *Server) Clear(ctx context.Context) error {
	var ids []string
	if err := s.Do(ctx, http.MethodGet, "/patients", nil, &ids); err != nil {
		return err
	}
	for _, id := range ids {
		if err := s.Do(ctx, http.MethodDelete, "/patients/"+id, nil, nil); err != nil {
			return err
		}
	}
	return nil
}

// Statistics is the part of GET /statistics tests check.
type Statistics struct {
	CountPatients, CountStudies, CountSeries, CountInstances int
}

// Stats returns the server's resource counts.
func (s *Server) Stats(ctx context.Context) (Statistics, error) {
	var st Statistics
	err := s.Do(ctx, http.MethodGet, "/statistics", nil, &st)
	return st, err
}
