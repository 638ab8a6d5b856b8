// Package xnat is imaging-api's FLIP-compatible XNAT backend: a client for
// the XNAT REST calls FLIP's imaging-api makes (projects, subjects and
// experiments, users and project roles, Container Service wiring for
// DICOM→NIfTI, DQR PACS query and import, zip download and file upload) and
// the import status FLIP computes from XNAT's DQR tables, read through pgx.
//
// Authentication follows FLIP: the service account logs in once with
// POST /data/JSESSION (HTTP Basic), the session id is sent as the JSESSIONID
// cookie on every call, and a call answered 401 logs in again once and is
// retried once. Concurrent callers share one login. A rejected login (401 or
// 403) is not retried for LoginBackoff, so a wrong password cannot walk the
// account into XNAT's lockout (20 failed logins lock it for an hour).
//
// Every failure from XNAT is an *Error carrying XNAT's status; compare with
// errors.Is against the sentinels (ErrNotFound, ErrAlreadyExists, ...). Path
// segments are percent-encoded one by one (nothing but RFC 3986 unreserved
// characters passes through), and empty or dot segments are refused before
// any request is made. Nothing here logs accession numbers, session ids or
// XNAT's reply bodies.
//
// The JSON types mirror XNAT's field names, which are also the names FLIP's
// imaging-api answers with, so handlers can return them as they are.
//
// A Client is safe for concurrent use.
package xnat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/flip-trust/node/shared/httpx"
)

// Defaults of Config.
const (
	DefaultTimeout      = 120 * time.Second
	DefaultAETitle      = "XNAT"
	DefaultPACSID       = 1
	DefaultLoginBackoff = 30 * time.Second
)

// Config configures a Client.
type Config struct {
	// BaseURL is XNAT's address (XNAT_URL), e.g. http://xnat-web:8080.
	BaseURL string
	// Username and Password are the service account (XNAT_SERVICE_USER,
	// XNAT_SERVICE_PASSWORD).
	Username, Password string
	// Timeout bounds each call except downloads, whose bodies stream for
	// as long as the caller's context allows (DefaultTimeout).
	Timeout time.Duration
	// AETitle and ReceiverPort are the C-MOVE destination an import names
	// when its request leaves them empty: XNAT's DICOM SCP receiver
	// (XNAT_AETITLE, default XNAT; XNAT_PORT, e.g. 8104).
	AETitle      string
	ReceiverPort int
	// PACSID is the PACS used when XNAT's registrations cannot be read
	// (PACS_ID, default 1).
	PACSID int
	// LoginBackoff is how long a rejected login is remembered before the
	// next attempt (DefaultLoginBackoff).
	LoginBackoff time.Duration
	// HTTPClient, if set, sends the requests (its Timeout should be zero:
	// downloads are bounded by their context).
	HTTPClient *http.Client
}

// Client talks to one XNAT as the service account.
type Client struct {
	base    *url.URL
	cfg     Config
	http    *http.Client
	db      Querier
	log     *slog.Logger
	loginCh chan struct{}

	mu          sync.Mutex
	token       string
	loginErr    error
	loginFailed time.Time

	pacsMu sync.Mutex
	pacsID int
}

// New returns a Client for cfg. db reads XNAT's DQR tables (ImportStatus,
// queued-request cleanup on DeleteProject); it may be nil, and then those
// operations report ErrNoDatabase or skip the cleanup.
func New(cfg Config, db Querier, logger *slog.Logger) (*Client, error) {
	base, err := url.Parse(strings.TrimRight(cfg.BaseURL, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("xnat: base URL %q must be an absolute http(s) URL", cfg.BaseURL)
	}
	if cfg.Username == "" || cfg.Password == "" {
		return nil, errors.New("xnat: service username and password are required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.AETitle == "" {
		cfg.AETitle = DefaultAETitle
	}
	if cfg.PACSID <= 0 {
		cfg.PACSID = DefaultPACSID
	}
	if cfg.LoginBackoff <= 0 {
		cfg.LoginBackoff = DefaultLoginBackoff
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: httpx.NewClient(cfg.Timeout).Transport}
	}
	// XNAT redirects expired browser sessions to its login page; a REST
	// client must see the redirect, not follow it.
	c := *hc
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Client{base: base, cfg: cfg, http: &c, db: db, log: logger, loginCh: make(chan struct{}, 1)}, nil
}

// call describes one XNAT request.
type call struct {
	op     string
	method string
	path   []string
	query  url.Values
	// body is sent as is; reader (rewound before each attempt) is used
	// when body is nil.
	body        []byte
	reader      io.ReadSeeker
	contentType string
	// ok lists the statuses that are success (200 when empty).
	ok []int
	// stream leaves the reply unbounded by Config.Timeout.
	stream bool
}

// do sends c with the service session, logging in again and retrying once
// on 401. A status outside c.ok is returned as *Error with the body read
// and closed; on success the caller closes the body.
func (cl *Client) do(ctx context.Context, c call) (*http.Response, error) {
	target, err := cl.url(c.path, c.query)
	if err != nil {
		return nil, fmt.Errorf("xnat %s: %w", c.op, err)
	}
	tok, err := cl.session(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := cl.send(ctx, c, target, tok)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusUnauthorized {
		drain(resp)
		cl.log.Info("xnat session rejected; logging in again", "op", c.op)
		if tok, err = cl.relogin(ctx, tok); err != nil {
			return nil, err
		}
		if resp, err = cl.send(ctx, c, target, tok); err != nil {
			return nil, err
		}
	}
	ok := c.ok
	if len(ok) == 0 {
		ok = []int{http.StatusOK}
	}
	if !slices.Contains(ok, resp.StatusCode) {
		return nil, replyError(c.op, resp)
	}
	return resp, nil
}

func (cl *Client) send(ctx context.Context, c call, target, tok string) (*http.Response, error) {
	cancel := context.CancelFunc(func() {})
	if !c.stream {
		ctx, cancel = context.WithTimeout(ctx, cl.cfg.Timeout)
	}
	var body io.Reader
	size := int64(-1)
	switch {
	case c.body != nil:
		body = bytes.NewReader(c.body)
	case c.reader != nil:
		n, err := c.reader.Seek(0, io.SeekEnd)
		if err == nil {
			_, err = c.reader.Seek(0, io.SeekStart)
		}
		if err != nil {
			cancel()
			return nil, fmt.Errorf("xnat %s: rewind body: %w", c.op, err)
		}
		// The transport closes a request body; the caller's reader stays open.
		body, size = io.NopCloser(c.reader), n
	}
	req, err := http.NewRequestWithContext(ctx, c.method, target, body)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("xnat %s: %w", c.op, err)
	}
	if size == 0 {
		req.Body = http.NoBody
	}
	if size >= 0 {
		req.ContentLength = size
	}
	if body != nil && c.contentType != "" {
		req.Header.Set("Content-Type", c.contentType)
	}
	req.Header.Set("Cookie", "JSESSIONID="+tok)
	resp, err := cl.http.Do(req)
	if err != nil {
		cancel()
		return nil, &Error{Op: c.op, Err: err}
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// cancelBody releases a call's timeout when its body is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

func replyError(op string, resp *http.Response) *Error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	drain(resp)
	return &Error{Op: op, Status: resp.StatusCode, Body: string(b)}
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}

// doJSON runs c and decodes a 200 body into out (when out is not nil). It
// returns the status XNAT answered.
func (cl *Client) doJSON(ctx context.Context, c call, out any) (int, error) {
	resp, err := cl.do(ctx, c)
	if err != nil {
		return 0, err
	}
	defer drain(resp)
	if out != nil && resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotModified {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return resp.StatusCode, fmt.Errorf("xnat %s: decode reply: %w: %v", c.op, ErrBadResponse, err)
		}
	}
	return resp.StatusCode, nil
}

// jsonCall is a call with a JSON body.
func jsonCall(op, method string, v any, path ...string) (call, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return call{}, fmt.Errorf("xnat %s: encode: %w", op, err)
	}
	return call{op: op, method: method, path: path, body: b, contentType: "application/json"}, nil
}

// session returns the current session id, logging in when there is none.
func (cl *Client) session(ctx context.Context) (string, error) {
	cl.mu.Lock()
	tok := cl.token
	cl.mu.Unlock()
	if tok != "" {
		return tok, nil
	}
	return cl.relogin(ctx, "")
}

// relogin replaces the session stale with a new one. Concurrent callers
// wait for one login; a caller whose stale session was already replaced
// gets the replacement.
func (cl *Client) relogin(ctx context.Context, stale string) (string, error) {
	select {
	case cl.loginCh <- struct{}{}:
	case <-ctx.Done():
		return "", &Error{Op: "login", Err: ctx.Err()}
	}
	defer func() { <-cl.loginCh }()
	cl.mu.Lock()
	if cl.token != "" && cl.token != stale {
		tok := cl.token
		cl.mu.Unlock()
		return tok, nil
	}
	cl.token = ""
	if cl.loginErr != nil && time.Since(cl.loginFailed) < cl.cfg.LoginBackoff {
		err := cl.loginErr
		cl.mu.Unlock()
		return "", err
	}
	cl.mu.Unlock()

	tok, err := cl.login(ctx)
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if err != nil {
		if s := StatusCode(err); s == http.StatusUnauthorized || s == http.StatusForbidden {
			cl.loginErr, cl.loginFailed = err, time.Now()
			cl.log.Warn("xnat rejected the service account login", "status", s)
		}
		return "", err
	}
	cl.token, cl.loginErr = tok, nil
	return tok, nil
}

// login opens a session: POST /data/JSESSION with Basic credentials; the
// reply body is the session id.
func (cl *Client) login(ctx context.Context) (string, error) {
	const op = "login"
	target, err := cl.url([]string{"data", "JSESSION"}, nil)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, cl.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, nil)
	if err != nil {
		return "", fmt.Errorf("xnat %s: %w", op, err)
	}
	req.SetBasicAuth(cl.cfg.Username, cl.cfg.Password)
	resp, err := cl.http.Do(req)
	if err != nil {
		return "", &Error{Op: op, Err: err}
	}
	if resp.StatusCode != http.StatusOK {
		return "", replyError(op, resp)
	}
	defer drain(resp)
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", &Error{Op: op, Err: err}
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" || strings.ContainsAny(tok, " ;,\r\n\"") {
		return "", &Error{Op: op, Status: http.StatusUnauthorized, Body: "no session id in the login reply"}
	}
	return tok, nil
}

// Ping checks that XNAT answers an authenticated call (GET /xapi/users, the
// session check FLIP makes), logging in if needed.
func (cl *Client) Ping(ctx context.Context) error {
	_, err := cl.doJSON(ctx, call{op: "session check", method: http.MethodGet, path: []string{"xapi", "users"}}, nil)
	return err
}

// Close ends the session (DELETE /data/JSESSION). The Client stays usable:
// the next call logs in again.
func (cl *Client) Close(ctx context.Context) error {
	cl.mu.Lock()
	tok := cl.token
	cl.token = ""
	cl.mu.Unlock()
	if tok == "" {
		return nil
	}
	target, err := cl.url([]string{"data", "JSESSION"}, nil)
	if err != nil {
		return err
	}
	resp, err := cl.send(ctx, call{op: "logout", method: http.MethodDelete}, target, tok)
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}
