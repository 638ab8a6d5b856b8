package doctor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Endpoint is an HTTP(S) dependency probed once, lazily, with a GET of its
// URL through the caller's client (so HTTPS_PROXY and a custom CA apply as
// they do for the service). Any HTTP answer, whatever its status, proves the
// path; the same answer gives the TLS certificate and the Date header.
// Endpoint is safe for concurrent use.
type Endpoint struct {
	URL    string
	client *http.Client
	now    func() time.Time

	once    sync.Once
	resp    *http.Response
	err     error
	start   time.Time
	elapsed time.Duration
}

// NewEndpoint returns an Endpoint for rawURL probed with client.
func NewEndpoint(rawURL string, client *http.Client) *Endpoint {
	return &Endpoint{URL: rawURL, client: client, now: time.Now}
}

func (e *Endpoint) probe(ctx context.Context) (*http.Response, error) {
	e.once.Do(func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.URL, nil)
		if err != nil {
			e.err = err
			return
		}
		req.Header.Set("User-Agent", "flip-trust-node-doctor")
		e.start = e.now()
		resp, err := e.client.Do(req)
		e.elapsed = e.now().Sub(e.start)
		if err != nil {
			e.err = err
			return
		}
		_ = resp.Body.Close() // the headers are all a check reads
		e.resp = resp
	})
	return e.resp, e.err
}

// Reachable passes when the endpoint answers HTTP at all.
func (e *Endpoint) Reachable(name, fix string) Check {
	return Check{Name: name, Run: func(ctx context.Context) Result {
		resp, err := e.probe(ctx)
		if err != nil {
			if certErr(err) != nil {
				return Fail("see the TLS certificate check", "%s: TLS handshake refused: %v", redactURL(e.URL), rootCause(err))
			}
			return Fail(fix, "%s: %v", redactURL(e.URL), rootCause(err))
		}
		return Pass("%s answered %d in %s", redactURL(e.URL), resp.StatusCode, e.elapsed.Round(time.Millisecond))
	}}
}

// TLS checks the endpoint's certificate: verified by the client's trust
// roots, and not expiring within warnWithin. A plain http:// URL is a
// warning: the connection is not protected.
func (e *Endpoint) TLS(name string, warnWithin time.Duration) Check {
	return Check{Name: name, Run: func(ctx context.Context) Result {
		u, err := url.Parse(e.URL)
		if err != nil {
			return Fail("correct the URL", "%q is not a URL", redactURL(e.URL))
		}
		if u.Scheme != "https" {
			return Warn("use the https:// URL the hub operator gives you (plain HTTP is for development only)",
				"%s is plain HTTP: no TLS", redactURL(e.URL))
		}
		resp, err := e.probe(ctx)
		if err != nil {
			var cve *tls.CertificateVerificationError
			if errors.As(err, &cve) && len(cve.UnverifiedCertificates) > 0 {
				leaf := cve.UnverifiedCertificates[0]
				return Fail(certFix(err), "certificate %s not trusted: %v (valid %s to %s)",
					subject(leaf), rootCause(cve.Err), leaf.NotBefore.UTC().Format(time.DateOnly), leaf.NotAfter.UTC().Format(time.DateOnly))
			}
			if c := certErr(err); c != nil {
				return Fail(certFix(err), "certificate not trusted: %v", c)
			}
			return Fail("fix reachability first", "no TLS session: %v", rootCause(err))
		}
		if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 {
			return Fail("check for a proxy that terminates TLS", "no certificate in the answer")
		}
		leaf := resp.TLS.PeerCertificates[0]
		left := leaf.NotAfter.Sub(e.now())
		days := int(left.Hours() / 24)
		detail := fmt.Sprintf("%s, %s, valid until %s (%d days)", subject(leaf), tls.VersionName(resp.TLS.Version),
			leaf.NotAfter.UTC().Format(time.DateOnly), days)
		if left < warnWithin {
			return Warn("ask the hub operator to renew the certificate before it expires", "%s", detail)
		}
		return Pass("%s", detail)
	}}
}

// Clock compares the local clock with the endpoint's Date header (taken at
// the middle of the request; the header has one-second resolution). A skew
// above warn is a warning, above fail a failure.
func (e *Endpoint) Clock(name string, warn, fail time.Duration) Check {
	return Check{Name: name, Run: func(ctx context.Context) Result {
		resp, err := e.probe(ctx)
		if err != nil {
			return Fail("fix reachability first", "no answer to read the time from")
		}
		date, err := http.ParseTime(resp.Header.Get("Date"))
		if err != nil {
			return Warn("none needed unless other checks fail; the server sends no Date header", "cannot compare clocks: no valid Date header")
		}
		local := e.start.Add(e.elapsed / 2)
		skew := local.Sub(date)
		// The header truncates to whole seconds: half a second is noise.
		skew -= 500 * time.Millisecond
		abs := skew
		if abs < 0 {
			abs = -abs
		}
		detail := fmt.Sprintf("local clock is %s %s the server's", abs.Round(time.Second), map[bool]string{true: "ahead of", false: "behind"}[skew >= 0])
		const fix = "synchronise the host clock with NTP (timedatectl set-ntp true; chronyc tracking)"
		switch {
		case abs > fail:
			return Fail(fix, "%s (limit %s)", detail, fail)
		case abs > warn:
			return Warn(fix, "%s (warning above %s)", detail, warn)
		}
		return Pass("%s", detail)
	}}
}

// TCPReachable passes when addr (host:port) accepts a TCP connection.
func TCPReachable(name, addr, fix string) Check {
	return Check{Name: name, Run: func(ctx context.Context) Result {
		var d net.Dialer
		start := time.Now()
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return Fail(fix, "%s: %v", addr, rootCause(err))
		}
		_ = c.Close()
		return Pass("%s accepted a connection in %s", addr, time.Since(start).Round(time.Millisecond))
	}}
}

// DiskSpace checks that dir exists, is writable, and has at least failBelow
// bytes free (a warning below warnBelow). env names the setting that
// chooses dir, for the fix hint.
func DiskSpace(name, env, dir string, failBelow, warnBelow uint64) Check {
	return Check{Name: name, Run: func(ctx context.Context) Result {
		st, err := os.Stat(dir)
		if err != nil {
			return Fail(fmt.Sprintf("create %s (owned by the service's user) or set %s", dir, env), "%s: %v", dir, rootCause(err))
		}
		if !st.IsDir() {
			return Fail(fmt.Sprintf("set %s to a directory", env), "%s is not a directory", dir)
		}
		f, err := os.CreateTemp(dir, ".doctor-*")
		if err != nil {
			return Fail(fmt.Sprintf("give the service's user write access to %s (chown), or mount a writable volume there", dir),
				"%s is not writable: %v", dir, rootCause(err))
		}
		_ = f.Close()
		_ = os.Remove(f.Name())
		var fs syscall.Statfs_t
		if err := syscall.Statfs(dir, &fs); err != nil {
			return Fail("check the mount", "statfs %s: %v", dir, err)
		}
		free := fs.Bavail * uint64(fs.Bsize)
		total := fs.Blocks * uint64(fs.Bsize)
		detail := fmt.Sprintf("%s: %s free of %s", dir, bytesText(free), bytesText(total))
		fix := fmt.Sprintf("free space under %s or grow the volume", dir)
		switch {
		case free < failBelow:
			return Fail(fix, "%s (needs at least %s)", detail, bytesText(failBelow))
		case free < warnBelow:
			return Warn(fix, "%s (warning below %s)", detail, bytesText(warnBelow))
		}
		return Pass("%s", detail)
	}}
}

// bytesText is n in binary units.
func bytesText(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func certErr(err error) error {
	var cve *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var he x509.HostnameError
	switch {
	case errors.As(err, &cve):
		return cve.Err
	case errors.As(err, &ua):
		return ua
	case errors.As(err, &ci):
		return ci
	case errors.As(err, &he):
		return he
	}
	return nil
}

func certFix(err error) string {
	var ci x509.CertificateInvalidError
	var he x509.HostnameError
	var ua x509.UnknownAuthorityError
	switch {
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return "the certificate is expired or not yet valid: check this host's clock, then ask the server's operator to renew it"
	case errors.As(err, &he):
		return "the URL's host name is not in the certificate: use the host name the operator gives you"
	case errors.As(err, &ua):
		return "the issuing CA is not trusted here: install the CA (SSL_CERT_FILE, or the service's CA file setting) or fix the interception proxy"
	}
	return "check the certificate chain the server presents"
}

func subject(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return "CN=" + c.Subject.CommonName
	}
	if len(c.DNSNames) > 0 {
		return "DNS=" + c.DNSNames[0]
	}
	return c.Subject.String()
}

// rootCause strips url.Error's method and URL (the check prints the URL
// itself, without credentials).
func rootCause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// redactURL drops credentials and the query from a URL for display.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "<invalid URL>"
	}
	u.User = nil
	u.RawQuery = ""
	return strings.TrimSuffix(u.String(), "?")
}
