package xnattest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Default service account of a new Server.
const (
	DefaultUsername = "flipServiceAccount"
	DefaultPassword = "flip"
)

// Roles a new Server's service account holds (configure-xnat.sh's set).
var ServiceRoles = []string{"ContainerManager", "DataManager", "SiteUser", "Administrator", "Dqr", "non_expiring"}

// Execer runs SQL statements; *pgxpool.Pool and *pgx.Conn satisfy it.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Options configure New. Zero values take the defaults named on each field.
type Options struct {
	// Username and Password are the service account (DefaultUsername,
	// DefaultPassword), created with ServiceRoles.
	Username, Password string
	// SessionTimeout is the idle time after which a session expires (15 min).
	SessionTimeout time.Duration
	// LockoutThreshold is the number of consecutive failed logins that lock
	// an account (20) for LockoutDuration (1 h).
	LockoutThreshold int
	LockoutDuration  time.Duration
	// TokenLifetime bounds alias tokens (48 h).
	TokenLifetime time.Duration
	// ReceiverAETitle and ReceiverPort are the DICOM SCP receiver an import's
	// destination must name (XNAT, 8104).
	ReceiverAETitle string
	ReceiverPort    int
	// SiteURLUnset makes project creation answer 500 after creating the
	// project, as XNAT 1.10 does before its siteUrl is configured.
	SiteURLUnset bool
	// DB, when set, receives the DQR queue and execution state in the
	// xhbm_* tables (see CreateSchema).
	DB Execer
	// Now is the clock (time.Now).
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.Username == "" {
		o.Username = DefaultUsername
	}
	if o.Password == "" {
		o.Password = DefaultPassword
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = 15 * time.Minute
	}
	if o.LockoutThreshold <= 0 {
		o.LockoutThreshold = 20
	}
	if o.LockoutDuration <= 0 {
		o.LockoutDuration = time.Hour
	}
	if o.TokenLifetime <= 0 {
		o.TokenLifetime = 48 * time.Hour
	}
	if o.ReceiverAETitle == "" {
		o.ReceiverAETitle = "XNAT"
	}
	if o.ReceiverPort == 0 {
		o.ReceiverPort = 8104
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Request is one recorded request.
type Request struct {
	Method string
	// Path is the escaped path as sent; Query the raw query.
	Path, Query string
	// Header is a copy of the request's headers.
	Header http.Header
	// Body is the request body (up to 1 MiB); ContentLength is as sent (-1
	// for a chunked body).
	Body          []byte
	ContentLength int64
	// User is the authenticated user ("" when unauthenticated).
	User string
	// Session reports whether the request was authenticated by session cookie.
	Session bool
	// Status is the status the server answered.
	Status int
}

// Fault alters the server's answer to matching requests. Faults are checked
// before authentication, in the order they were injected.
type Fault struct {
	// Method matches any method when empty.
	Method string
	// Path matches the unescaped request path: exactly, or as a prefix when
	// it ends in "*".
	Path string
	// Delay holds the answer (bounded by the request's context).
	Delay time.Duration
	// Status, when non-zero, is answered with Body instead of the real
	// handler.
	Status int
	Body   string
	// ExpireSession expires the caller's session before handling, so the
	// request answers 401 as after an idle timeout.
	ExpireSession bool
	// Times limits how many requests the fault affects; 0 means until
	// ClearFaults.
	Times int
}

type fault struct {
	Fault
	used int
}

// Server is a running contract server. It is safe for concurrent use.
type Server struct {
	// URL is the server's base URL (no trailing slash).
	URL  string
	ts   *httptest.Server
	opts Options

	mu       sync.Mutex
	st       *state
	sessions map[string]*session
	faults   []*fault
	requests []Request
	logins   int
	gate     chan struct{}
	release  func()
}

type session struct {
	user     string
	lastUsed time.Time
}

// New starts a server. Close it when done.
func New(opts Options) *Server {
	opts = opts.withDefaults()
	s := &Server{opts: opts, sessions: map[string]*session{}, st: newState(opts.Now)}
	s.st.addUser(&user{
		Username: opts.Username, Password: opts.Password, Email: opts.Username + "@xnat.invalid",
		FirstName: "FLIP", LastName: "Service", Enabled: true, Verified: true, Roles: setOf(ServiceRoles...),
	})
	s.ts = httptest.NewServer(s.handler())
	s.URL = s.ts.URL
	return s
}

// Close stops the server.
func (s *Server) Close() {
	s.mu.Lock()
	release := s.release
	s.mu.Unlock()
	if release != nil {
		release()
	}
	s.ts.Close()
}

// Client returns an HTTP client for the server.
func (s *Server) Client() *http.Client { return s.ts.Client() }

// ExpireSessions ends every session, as an idle timeout or restart would.
func (s *Server) ExpireSessions() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.sessions)
}

// Sessions returns the number of live sessions.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Logins returns the number of successful POST /data/JSESSION logins.
func (s *Server) Logins() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logins
}

// InjectFault adds a fault.
func (s *Server) InjectFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &fault{Fault: f})
}

// ClearFaults removes every fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// Requests returns the recorded requests, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// RequestsTo returns the recorded requests with method (any when empty) whose
// unescaped path is path, or starts with it when path ends in "*".
func (s *Server) RequestsTo(method, path string) []Request {
	var out []Request
	for _, r := range s.Requests() {
		if (method == "" || r.Method == method) && pathMatches(path, unescapePath(r.Path)) {
			out = append(out, r)
		}
	}
	return out
}

// ResetRequests forgets the recorded requests.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
}

// PauseDownloads makes zip downloads stop after their first entry until the
// returned release function is called (or the server closes). While paused,
// further calls return the same release function.
func (s *Server) PauseDownloads() (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.release != nil {
		return s.release
	}
	g := make(chan struct{})
	s.gate = g
	var once sync.Once
	s.release = func() {
		once.Do(func() {
			s.mu.Lock()
			s.gate, s.release = nil, nil
			s.mu.Unlock()
			close(g)
		})
	}
	return s.release
}

func (s *Server) downloadGate() chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gate
}

func pathMatches(pattern, path string) bool {
	if p, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(path, p)
	}
	return pattern == path
}

func unescapePath(p string) string {
	if u, err := url.PathUnescape(p); err == nil {
		return u
	}
	return p
}

type ctxKey struct{}

// caller is the authenticated user of a request.
type caller struct {
	user    *user
	session string
}

func callerOf(r *http.Request) *caller {
	c, _ := r.Context().Value(ctxKey{}).(*caller)
	return c
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (w *statusRecorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusRecorder) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	s.routes(mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20+1))
		rest := r.Body
		r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), rest))
		if len(body) > 1<<20 {
			body = body[:1<<20]
		}
		rec := &statusRecorder{ResponseWriter: w}
		entry := Request{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: body, ContentLength: r.ContentLength}
		defer func() {
			if rec.status == 0 {
				rec.status = http.StatusOK
			}
			entry.Status = rec.status
			s.mu.Lock()
			s.requests = append(s.requests, entry)
			s.mu.Unlock()
		}()

		f := s.matchFault(r)
		if f != nil && f.Delay > 0 {
			select {
			case <-time.After(f.Delay):
			case <-r.Context().Done():
				return
			}
		}
		if f != nil && f.Status != 0 {
			textError(rec, f.Status, f.Body)
			return
		}
		if f != nil && f.ExpireSession {
			if c, err := r.Cookie("JSESSIONID"); err == nil {
				s.mu.Lock()
				delete(s.sessions, c.Value)
				s.mu.Unlock()
			}
		}
		if r.URL.Path == "/data/JSESSION" {
			s.jsession(rec, r, &entry)
			return
		}
		c, status := s.authenticate(r)
		if c == nil {
			rec.Header().Set("WWW-Authenticate", `Basic realm="XNAT"`)
			textError(rec, status, "Unauthorized")
			return
		}
		entry.User, entry.Session = c.user.Username, c.session != ""
		mux.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), ctxKey{}, c)))
	})
}

func (s *Server) matchFault(r *http.Request) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.faults {
		if (f.Method == "" || f.Method == r.Method) && pathMatches(f.Path, r.URL.Path) {
			f.used++
			if f.Times > 0 && f.used >= f.Times {
				s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
			}
			out := f.Fault
			return &out
		}
	}
	return nil
}

// authenticate resolves the caller from the session cookie, else from Basic
// credentials. It answers the status to use on failure.
func (s *Server) authenticate(r *http.Request) (*caller, int) {
	now := s.opts.Now()
	if ck, err := r.Cookie("JSESSIONID"); err == nil {
		s.mu.Lock()
		sess, ok := s.sessions[ck.Value]
		if ok && now.Sub(sess.lastUsed) > s.opts.SessionTimeout {
			delete(s.sessions, ck.Value)
			ok = false
		}
		var u *user
		if ok {
			sess.lastUsed = now
			u = s.st.users[sess.user]
		}
		s.mu.Unlock()
		if u != nil && u.Enabled {
			return &caller{user: u, session: ck.Value}, 0
		}
	}
	if name, pass, ok := r.BasicAuth(); ok {
		if u := s.checkCredentials(name, pass); u != nil {
			return &caller{user: u}, 0
		}
	}
	return nil, http.StatusUnauthorized
}

// checkCredentials validates a username/password or alias/secret pair,
// counting failures towards the lockout.
func (s *Server) checkCredentials(name, pass string) *user {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	if t, ok := s.st.tokens[name]; ok {
		if t.Secret == pass && now.Before(t.Expires) {
			if u := s.st.users[t.Username]; u != nil && u.Enabled {
				return u
			}
		}
		return nil
	}
	u := s.st.users[name]
	if u == nil {
		return nil
	}
	if now.Before(u.lockedUntil) {
		return nil
	}
	if u.Password != pass || !u.Enabled {
		u.failed++
		if u.failed >= s.opts.LockoutThreshold {
			u.lockedUntil = now.Add(s.opts.LockoutDuration)
			u.failed = 0
		}
		return nil
	}
	u.failed = 0
	return u
}

func (s *Server) jsession(w http.ResponseWriter, r *http.Request, entry *Request) {
	switch r.Method {
	case http.MethodPost:
		c, _ := s.authenticate(r)
		if c == nil {
			w.Header().Set("WWW-Authenticate", `Basic realm="XNAT"`)
			textError(w, http.StatusUnauthorized, "Login attempt failed. Please try again.")
			return
		}
		entry.User, entry.Session = c.user.Username, c.session != ""
		id := c.session
		s.mu.Lock()
		if id == "" {
			id = newSessionID()
			s.sessions[id] = &session{user: c.user.Username, lastUsed: s.opts.Now()}
			ms := s.opts.Now().UnixMilli()
			c.user.LastLogin = &ms
			s.logins++
		}
		s.mu.Unlock()
		http.SetCookie(w, &http.Cookie{Name: "JSESSIONID", Value: id, Path: "/", HttpOnly: true})
		w.Header().Set("Content-Type", "text/plain;charset=UTF-8")
		_, _ = io.WriteString(w, id)
	case http.MethodDelete:
		if ck, err := r.Cookie("JSESSIONID"); err == nil {
			s.mu.Lock()
			delete(s.sessions, ck.Value)
			s.mu.Unlock()
		}
		w.WriteHeader(http.StatusOK)
	default:
		textError(w, http.StatusMethodNotAllowed, "Method not allowed")
	}
}

func newSessionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return strings.ToUpper(hex.EncodeToString(b[:]))
}

func textError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain;charset=UTF-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		textError(w, http.StatusInternalServerError, fmt.Sprintf("encode: %v", err))
		return
	}
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeText(w http.ResponseWriter, status int, s string) {
	w.Header().Set("Content-Type", "text/plain;charset=UTF-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, s)
}

// resultSet wraps rows in XNAT's listing envelope.
func resultSet[T any](rows []T) map[string]any {
	if rows == nil {
		rows = []T{}
	}
	return map[string]any{"ResultSet": map[string]any{"Result": rows, "totalRecords": fmt.Sprint(len(rows))}}
}

// jsonFormat reports whether a /data request asks for JSON (format=json or
// no format), answering 400 otherwise.
func jsonFormat(w http.ResponseWriter, r *http.Request) bool {
	switch f := r.URL.Query().Get("format"); f {
	case "", "json":
		return true
	default:
		textError(w, http.StatusBadRequest, "Unsupported format: "+f)
		return false
	}
}

// requireRole answers status unless the caller holds one of roles. The
// caller must not hold s.mu.
func (s *Server) requireRole(w http.ResponseWriter, r *http.Request, status int, roles ...string) bool {
	c := callerOf(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, role := range roles {
		if c.user.Roles[role] {
			return true
		}
	}
	textError(w, status, "Insufficient privileges")
	return false
}

func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		textError(w, http.StatusBadRequest, "Invalid JSON body")
		return false
	}
	return true
}

func setOf(items ...string) map[string]bool {
	m := make(map[string]bool, len(items))
	for _, i := range items {
		m[i] = true
	}
	return m
}
