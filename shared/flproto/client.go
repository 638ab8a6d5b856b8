package flproto

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// HTTPError is a refused request: its status and the server's detail.
type HTTPError struct {
	Status  int
	Detail  string
	Missing []int
}

// Error implements error.
func (e *HTTPError) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("http %d", e.Status)
	}
	return fmt.Sprintf("http %d: %s", e.Status, e.Detail)
}

// Transient reports whether the request may succeed when tried again
// (5xx, 429, 408).
func (e *HTTPError) Transient() bool {
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout
}

// IsTransient reports whether err is worth retrying: a connection or
// timeout error, a cut-off body, or a transient *HTTPError. A context's own
// cancellation is not.
func IsTransient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var he *HTTPError
	if errors.As(err, &he) {
		return he.Transient()
	}
	var ue *url.Error
	var ne net.Error
	var ce *chunkError
	return errors.As(err, &ue) || errors.As(err, &ne) || errors.As(err, &ce) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}

// RetryPolicy is capped exponential backoff with jitter. Each delay is drawn
// between half and all of Initial·2^attempt, capped at Max.
type RetryPolicy struct {
	Initial time.Duration
	Max     time.Duration
	// Attempts is how many failures in a row a transfer takes before it
	// gives up; a request that succeeds starts the count again.
	Attempts int
}

// DefaultRetry is the protocol's policy: 1 s doubling to 60 s. A transfer
// gives up after 10 failures in a row.
var DefaultRetry = RetryPolicy{Initial: time.Second, Max: time.Minute, Attempts: 10}

// Delay is the wait before retry number attempt (0-based).
func (p RetryPolicy) Delay(attempt int) time.Duration {
	d := p.Initial
	for i := 0; i < attempt && d < p.Max; i++ {
		d *= 2
	}
	d = min(d, p.Max)
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// TLSOptions are the client's TLS files: an extra CA bundle trusted beside
// the system roots, and a certificate and key for mutual TLS. Empty fields
// are not used.
type TLSOptions struct {
	CAFile   string
	CertFile string
	KeyFile  string
}

// NewHTTPClient returns the HTTP/1.1 client the FL channel uses: proxies
// from the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), the system roots
// plus opts.CAFile, the client certificate when given, and dial, TLS and
// response-header timeouts. It has no overall timeout: long polls and large
// chunks are bounded by their requests' contexts.
func NewHTTPClient(opts TLSOptions) (*http.Client, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if opts.CAFile != "" {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA bundle: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA bundle %s holds no PEM certificate", opts.CAFile)
		}
		tc.RootCAs = pool
	}
	if (opts.CertFile == "") != (opts.KeyFile == "") {
		return nil, errors.New("a client certificate needs both a certificate and a key file")
	}
	if opts.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(opts.CertFile, opts.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tc,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: MaxWait + 30*time.Second,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   8,
		// HTTP/1.1 only: the channel must cross proxies that block HTTP/2.
		TLSNextProto:    map[string]func(string, *tls.Conn) http.RoundTripper{},
		ReadBufferSize:  64 << 10,
		WriteBufferSize: 64 << 10,
	}
	return &http.Client{Transport: t}, nil
}

// Progress is told how many bytes of a transfer are done out of total. It
// is called from the transfer's goroutines, one call at a time.
type Progress func(done, total int64)

// Client speaks the FL protocol to one server as one client. Its fields are
// set before first use and not changed after; a Client is then safe for
// concurrent use.
type Client struct {
	// BaseURL is the server's URL without /fl/v1 ("https://fl.hub.example").
	BaseURL string
	Name    string
	Secret  string
	HTTP    *http.Client
	// Retry governs retries inside Download and Upload.
	Retry RetryPolicy
	// Parallel is how many chunks Download and Upload move at once (1 when 0).
	Parallel int
	// CallTimeout bounds each short call (heartbeat, result, manifest,
	// upload state); ChunkTimeout bounds each chunk's request.
	CallTimeout  time.Duration
	ChunkTimeout time.Duration
	// Progress, when set, hears how far transfers are.
	Progress Progress
}

// NewClient returns a Client with the default retry policy and timeouts.
func NewClient(baseURL, name, secret string, hc *http.Client) *Client {
	return &Client{
		BaseURL: strings.TrimRight(baseURL, "/"), Name: name, Secret: secret, HTTP: hc,
		Retry: DefaultRetry, Parallel: 2, CallTimeout: time.Minute, ChunkTimeout: 10 * time.Minute,
	}
}

// route fills the {id} and {n} placeholders of pattern.
func (c *Client) route(pattern, id string, n int) string {
	p := strings.Replace(pattern, "{id}", url.PathEscape(id), 1)
	p = strings.Replace(p, "{n}", strconv.Itoa(n), 1)
	return strings.TrimRight(c.BaseURL, "/") + p
}

func (c *Client) newRequest(ctx context.Context, method, u string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, u, err)
	}
	req.Header.Set(HeaderClient, c.Name)
	req.Header.Set("Authorization", "Bearer "+c.Secret)
	return req, nil
}

// do sends req and returns its response when 2xx; otherwise the body is
// read as a Problem and returned as *HTTPError.
func (c *Client) do(req *http.Request) (*http.Response, error) {
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return resp, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var p Problem
	he := &HTTPError{Status: resp.StatusCode}
	if json.Unmarshal(body, &p) == nil {
		he.Detail, he.Missing = p.Detail, p.Missing
	} else {
		he.Detail = strings.TrimSpace(string(body))
	}
	return nil, he
}

// callJSON sends in (when not nil) as JSON and decodes a 200's body into out
// (when not nil), within CallTimeout.
func (c *Client) callJSON(ctx context.Context, method, u string, in, out any) error {
	if c.CallTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.CallTimeout)
		defer cancel()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, u, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := c.newRequest(ctx, method, u, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode != http.StatusNoContent {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, u, err)
		}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return nil
}

// NextTask long-polls for this client's next task, waiting at most wait
// (the server's default when 0). It returns nil, nil when none came.
func (c *Client) NextTask(ctx context.Context, wait time.Duration) (*Task, error) {
	u := c.BaseURL + PathNextTask
	if wait > 0 {
		u += "?wait=" + strconv.Itoa(int(min(wait, MaxWait).Round(time.Second)/time.Second))
	}
	ctx, cancel := context.WithTimeout(ctx, max(wait, DefaultWait)+30*time.Second)
	defer cancel()
	req, err := c.newRequest(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(req)
	if err != nil {
		return nil, fmt.Errorf("next task: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent {
		return nil, nil
	}
	var t Task
	if err := json.NewDecoder(resp.Body).Decode(&t); err != nil {
		return nil, fmt.Errorf("next task: decode answer: %w", err)
	}
	return &t, nil
}

// Heartbeat tells the server task taskID is still running; the answer says
// whether to cancel it.
func (c *Client) Heartbeat(ctx context.Context, taskID string) (Heartbeat, error) {
	var hb Heartbeat
	if err := c.callJSON(ctx, http.MethodPost, c.route(PathHeartbeat, taskID, 0), struct{}{}, &hb); err != nil {
		return Heartbeat{}, fmt.Errorf("heartbeat: %w", err)
	}
	return hb, nil
}

// SubmitResult sends the result of task taskID.
func (c *Client) SubmitResult(ctx context.Context, taskID string, res Result) error {
	if err := c.callJSON(ctx, http.MethodPost, c.route(PathResult, taskID, 0), res, nil); err != nil {
		return fmt.Errorf("submit result: %w", err)
	}
	return nil
}

// retry runs op until it succeeds, fails with an error that is not
// transient, or fails c.Retry.Attempts times in a row.
func (c *Client) retry(ctx context.Context, what string, op func(ctx context.Context) error) error {
	p := c.Retry
	if p.Attempts <= 0 {
		p = DefaultRetry
	}
	for attempt := 0; ; attempt++ {
		err := op(ctx)
		if err == nil || !IsTransient(err) || ctx.Err() != nil {
			return err
		}
		if attempt+1 >= p.Attempts {
			return fmt.Errorf("%s: giving up after %d attempts: %w", what, attempt+1, err)
		}
		if err := sleep(ctx, p.Delay(attempt)); err != nil {
			return err
		}
	}
}
