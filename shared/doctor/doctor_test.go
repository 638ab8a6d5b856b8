package doctor

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// tlsServer starts an HTTPS server whose certificate for 127.0.0.1 is valid
// from notBefore to notAfter, and returns it with a client that trusts it.
func tlsServer(t *testing.T, notBefore, notAfter time.Time, h http.Handler) (*httptest.Server, *http.Client) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hub.test"},
		NotBefore: notBefore, NotAfter: notAfter, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return srv, &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func run(t *testing.T, c Check) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Run(ctx)
}

func notFound() http.Handler { return http.NotFoundHandler() }

func TestEndpointTLS(t *testing.T) {
	t.Parallel()
	now := time.Now()
	cases := []struct {
		name       string
		from, to   time.Time
		want       Status
		reachable  Status
		wantDetail string
	}{
		{"valid for a year", now.Add(-time.Hour), now.Add(365 * 24 * time.Hour), StatusPass, StatusPass, "(364 days)"},
		{"expires in two days", now.Add(-time.Hour), now.Add(50 * time.Hour), StatusWarn, StatusPass, "(2 days)"},
		{"expired yesterday", now.Add(-48 * time.Hour), now.Add(-24 * time.Hour), StatusFail, StatusFail, "expired"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, client := tlsServer(t, tc.from, tc.to, notFound())
			e := NewEndpoint(srv.URL+"/api", client)
			r := run(t, e.TLS("hub TLS certificate", 14*24*time.Hour))
			if r.Status != tc.want || !strings.Contains(r.Detail, tc.wantDetail) {
				t.Fatalf("TLS = %+v, want %s with %q", r, tc.want, tc.wantDetail)
			}
			if r.Status != StatusPass && r.Fix == "" {
				t.Errorf("%s without a fix", r.Status)
			}
			if got := run(t, e.Reachable("hub reachable", "fix")).Status; got != tc.reachable {
				t.Errorf("Reachable = %s, want %s", got, tc.reachable)
			}
		})
	}
}

func TestEndpointTLSUntrustedAndPlain(t *testing.T) {
	t.Parallel()
	now := time.Now()
	srv, _ := tlsServer(t, now.Add(-time.Hour), now.Add(time.Hour*24*90), notFound())
	r := run(t, NewEndpoint(srv.URL, &http.Client{Timeout: 5 * time.Second}).TLS("tls", time.Hour))
	if r.Status != StatusFail || !strings.Contains(r.Fix, "CA") {
		t.Errorf("unknown CA: %+v", r)
	}
	plain := httptest.NewServer(notFound())
	t.Cleanup(plain.Close)
	if r := run(t, NewEndpoint(plain.URL, plain.Client()).TLS("tls", time.Hour)); r.Status != StatusWarn {
		t.Errorf("plain http: %+v", r)
	}
}

func TestEndpointClock(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		offset time.Duration
		want   Status
	}{
		{"in sync", 0, StatusPass},
		{"server 20s ahead", 20 * time.Second, StatusWarn},
		{"server 10 minutes behind", -10 * time.Minute, StatusFail},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Date", time.Now().Add(tc.offset).UTC().Format(http.TimeFormat))
			}))
			t.Cleanup(srv.Close)
			r := run(t, NewEndpoint(srv.URL, srv.Client()).Clock("clock skew", 5*time.Second, time.Minute))
			if r.Status != tc.want {
				t.Fatalf("Clock = %+v, want %s", r, tc.want)
			}
		})
	}
}

func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	addr := closedPort(t)
	e := NewEndpoint("http://"+addr+"/api", &http.Client{Timeout: 5 * time.Second})
	if r := run(t, e.Reachable("hub reachable", "open outbound HTTPS to the hub")); r.Status != StatusFail || !strings.Contains(r.Detail, "refused") || r.Fix == "" {
		t.Errorf("Reachable on a closed port: %+v", r)
	}
	if r := run(t, e.Clock("clock", time.Second, time.Minute)); r.Status != StatusFail {
		t.Errorf("Clock on a closed port: %+v", r)
	}
	if r := run(t, TCPReachable("fl server", addr, "fix")); r.Status != StatusFail {
		t.Errorf("TCPReachable on a closed port: %+v", r)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if r := run(t, TCPReachable("fl server", l.Addr().String(), "fix")); r.Status != StatusPass {
		t.Errorf("TCPReachable on a listening port: %+v", r)
	}
}

func TestEndpointRedactsCredentials(t *testing.T) {
	t.Parallel()
	addr := closedPort(t)
	r := run(t, NewEndpoint("http://user:s3cret@"+addr+"/?token=abc", &http.Client{Timeout: 5 * time.Second}).Reachable("x", "fix"))
	if strings.Contains(r.Detail, "s3cret") || strings.Contains(r.Detail, "abc") {
		t.Errorf("detail leaks credentials: %s", r.Detail)
	}
}

func TestDiskSpace(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if r := run(t, DiskSpace("disk", "DATA_DIR", dir, 1, 2)); r.Status != StatusPass {
		t.Errorf("temp dir: %+v", r)
	}
	if r := run(t, DiskSpace("disk", "DATA_DIR", dir, 1<<62, 1<<62)); r.Status != StatusFail {
		t.Errorf("needing 4 EiB: %+v", r)
	}
	if r := run(t, DiskSpace("disk", "DATA_DIR", dir, 1, 1<<62)); r.Status != StatusWarn {
		t.Errorf("warning at 4 EiB: %+v", r)
	}
	if r := run(t, DiskSpace("disk", "DATA_DIR", dir+"/missing", 1, 2)); r.Status != StatusFail || !strings.Contains(r.Fix, "DATA_DIR") {
		t.Errorf("missing dir: %+v", r)
	}
}

func TestRunFormatAndExitCode(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	checks := []Check{
		{Name: "one", Run: func(context.Context) Result { return Pass("fine") }},
		{Name: "two", Run: func(context.Context) Result { return Warn("do this", "meh") }},
		{Name: "three", Run: func(ctx context.Context) Result { <-ctx.Done(); return Pass("late") }},
		{Name: "four", Run: func(context.Context) Result { panic("boom") }},
	}
	s := Run(context.Background(), &out, "svc", checks, Options{Timeout: 50 * time.Millisecond})
	if s.Pass != 1 || s.Warn != 1 || s.Fail != 2 || s.ExitCode() != 1 {
		t.Errorf("summary %+v", s)
	}
	text := out.String()
	for _, want := range []string{"PASS  svc", "WARN  svc", "fix: do this", "FAIL  svc", "panicked: boom", "svc: 4 checks: 1 passed, 1 warnings, 2 failed"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	if (Summary{Pass: 3, Warn: 2}).ExitCode() != 0 {
		t.Error("warnings alone must exit 0")
	}
}
