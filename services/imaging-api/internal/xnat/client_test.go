package xnat_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flip-trust/node/services/imaging-api/internal/xnat"
	"github.com/flip-trust/node/services/imaging-api/internal/xnattest"
)

func TestNewValidatesConfig(t *testing.T) {
	for _, cfg := range []xnat.Config{
		{BaseURL: "", Username: "u", Password: "p"},
		{BaseURL: "xnat-web:8080", Username: "u", Password: "p"},
		{BaseURL: "ftp://xnat", Username: "u", Password: "p"},
		{BaseURL: "http://xnat", Username: "", Password: "p"},
		{BaseURL: "http://xnat", Username: "u", Password: ""},
	} {
		if _, err := xnat.New(cfg, nil, nil); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

func TestSessionIsReusedAndRenewedOnceOn401(t *testing.T) {
	f := newFixture(t, xnattest.Options{}, nil)
	ctx := context.Background()
	for range 3 {
		if _, err := f.cl.ListProjects(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.srv.Logins(); n != 1 {
		t.Fatalf("3 calls made %d logins, want 1", n)
	}
	for _, r := range f.srv.RequestsTo("GET", "/data/projects") {
		if !r.Session || r.Header.Get("Authorization") != "" {
			t.Errorf("call not made with the session cookie only: session=%v auth=%q", r.Session, r.Header.Get("Authorization"))
		}
	}

	f.srv.ExpireSessions()
	f.srv.ResetRequests()
	if _, err := f.cl.ListProjects(ctx); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	if n := f.srv.Logins(); n != 2 {
		t.Errorf("logins after expiry = %d, want 2", n)
	}
	var seq []string
	for _, r := range f.srv.Requests() {
		seq = append(seq, r.Method+" "+r.Path+" "+http.StatusText(r.Status))
	}
	want := []string{"GET /data/projects Unauthorized", "POST /data/JSESSION OK", "GET /data/projects OK"}
	if strings.Join(seq, "|") != strings.Join(want, "|") {
		t.Errorf("sequence %q, want %q", seq, want)
	}

	// A call that keeps answering 401 is retried once, then reported.
	f.srv.ResetRequests()
	f.srv.InjectFault(xnattest.Fault{Method: "GET", Path: "/xapi/users/profiles", Status: http.StatusUnauthorized})
	_, err := f.cl.ListUsers(ctx)
	if !errors.Is(err, xnat.ErrUnauthorized) || xnat.StatusCode(err) != http.StatusUnauthorized {
		t.Fatalf("persistent 401: %v", err)
	}
	if n := len(f.srv.RequestsTo("GET", "/xapi/users/profiles")); n != 2 {
		t.Errorf("persistent 401: %d attempts, want 2", n)
	}
	if n := len(f.srv.RequestsTo("POST", "/data/JSESSION")); n != 1 {
		t.Errorf("persistent 401: %d logins, want 1", n)
	}
}

func TestConcurrentCallersShareOneLogin(t *testing.T) {
	f := newFixture(t, xnattest.Options{}, nil)
	ctx := context.Background()
	if err := f.cl.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	f.srv.ExpireSessions()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			if _, err := f.cl.ListProjects(ctx); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := f.srv.Logins(); n != 2 {
		t.Errorf("logins = %d, want 2 (one initial, one renewal shared by 16 callers)", n)
	}
}

func TestBadCredentialsAreReportedAndNotHammered(t *testing.T) {
	f := newFixture(t, xnattest.Options{}, nil, func(c *xnat.Config) { c.Password = "wrong" })
	ctx := context.Background()
	_, err := f.cl.ListProjects(ctx)
	var xe *xnat.Error
	if !errors.As(err, &xe) || xe.Op != "login" || xe.Status != http.StatusUnauthorized || !errors.Is(err, xnat.ErrUnauthorized) {
		t.Fatalf("bad password: %v", err)
	}
	for range 5 {
		if _, err := f.cl.ListProjects(ctx); xnat.StatusCode(err) != http.StatusUnauthorized {
			t.Fatalf("later call: %v", err)
		}
	}
	if n := len(f.srv.RequestsTo("POST", "/data/JSESSION")); n != 1 {
		t.Errorf("%d login attempts within the backoff, want 1", n)
	}
	if u, _ := f.srv.UserState(xnattest.DefaultUsername); u.Locked {
		t.Error("the service account got locked")
	}
	if n := len(f.srv.RequestsTo("GET", "/data/projects")); n != 0 {
		t.Errorf("%d project calls made without a session", n)
	}

	// After the backoff the login is tried again.
	g := newFixture(t, xnattest.Options{}, nil, func(c *xnat.Config) { c.Password = "wrong"; c.LoginBackoff = time.Millisecond })
	_, _ = g.cl.ListProjects(ctx)
	time.Sleep(5 * time.Millisecond)
	_, _ = g.cl.ListProjects(ctx)
	if n := len(g.srv.RequestsTo("POST", "/data/JSESSION")); n != 2 {
		t.Errorf("%d login attempts after the backoff, want 2", n)
	}
}

func TestErrorsCarryXNATStatus(t *testing.T) {
	f := newFixture(t, xnattest.Options{}, nil, func(c *xnat.Config) { c.Timeout = 300 * time.Millisecond })
	ctx := context.Background()
	cases := []struct {
		name   string
		fault  xnattest.Fault
		status int
		is     error
	}{
		{"service unavailable", xnattest.Fault{Path: "/data/projects", Status: 503, Body: "secret-acc-123"}, 503, xnat.ErrUnavailable},
		{"internal error", xnattest.Fault{Path: "/data/projects", Status: 500}, 500, nil},
		{"forbidden", xnattest.Fault{Path: "/data/projects", Status: 403}, 403, xnat.ErrForbidden},
		{"slow", xnattest.Fault{Path: "/data/projects", Delay: 2 * time.Second}, 0, xnat.ErrUnavailable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.srv.ClearFaults()
			f.srv.InjectFault(tc.fault)
			start := time.Now()
			_, err := f.cl.ListProjects(ctx)
			if err == nil || xnat.StatusCode(err) != tc.status {
				t.Fatalf("err %v, status %d, want %d", err, xnat.StatusCode(err), tc.status)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("%v is not %v", err, tc.is)
			}
			if errors.Is(err, xnat.ErrNotFound) || errors.Is(err, xnat.ErrAlreadyExists) {
				t.Errorf("%v matches the wrong sentinel", err)
			}
			if strings.Contains(err.Error(), "secret-acc-123") {
				t.Errorf("error text carries XNAT's reply: %v", err)
			}
			if tc.status == 0 && time.Since(start) > 2*time.Second {
				t.Errorf("timeout not applied: %v", time.Since(start))
			}
		})
	}
	f.srv.ClearFaults()
	f.srv.InjectFault(xnattest.Fault{Path: "/data/projects", Status: 503, Body: "secret-acc-123", Times: 1})
	_, err := f.cl.ListProjects(ctx)
	var xe *xnat.Error
	if !errors.As(err, &xe) || xe.Body != "secret-acc-123" || xe.Op != "list projects" {
		t.Errorf("reply not kept in the error: %#v", err)
	}
}

func TestPathSegmentsAreEscaped(t *testing.T) {
	f := newFixture(t, xnattest.Options{}, nil)
	ctx := context.Background()
	if err := f.srv.AddProject(xnattest.Project{ID: "P1"}); err != nil {
		t.Fatal(err)
	}
	_, err := f.cl.AddUserToProject(ctx, xnattest.DefaultUsername, "a/b c?d", xnat.RoleMembers)
	if !errors.Is(err, xnat.ErrNotFound) {
		t.Fatalf("unknown project: %v", err)
	}
	got := f.srv.RequestsTo("PUT", "/data/projects/*")
	if len(got) != 1 || got[0].Path != "/data/projects/a%2Fb%20c%3Fd/users/Members/"+xnattest.DefaultUsername || got[0].Query != "" {
		t.Errorf("request %+v", got)
	}
	f.srv.ResetRequests()
	for _, bad := range []string{"", ".", ".."} {
		if _, err := f.cl.AddUserToProject(ctx, xnattest.DefaultUsername, bad, xnat.RoleMembers); !errors.Is(err, xnat.ErrInvalidSegment) {
			t.Errorf("segment %q: %v", bad, err)
		}
	}
	if n := len(f.srv.RequestsTo("PUT", "/data/projects/*")); n != 0 {
		t.Errorf("%d requests sent for invalid segments", n)
	}
}

func TestValidSegment(t *testing.T) {
	for s, want := range map[string]bool{
		"ACC123": true, "a-b_c.d~e": true, "ACC..1": true,
		"": false, ".": false, "..": false, "a/b": false, "a b": false, "a%2F": false, "é": false, "a?": false,
	} {
		if got := xnat.ValidSegment(s); got != want {
			t.Errorf("ValidSegment(%q) = %v", s, got)
		}
	}
}

func TestCloseEndsSession(t *testing.T) {
	f := newFixture(t, xnattest.Options{}, nil)
	ctx := context.Background()
	if err := f.cl.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if f.srv.Sessions() != 1 {
		t.Fatalf("sessions = %d", f.srv.Sessions())
	}
	if err := f.cl.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if f.srv.Sessions() != 0 {
		t.Errorf("sessions after Close = %d", f.srv.Sessions())
	}
	if err := f.cl.Ping(ctx); err != nil || f.srv.Logins() != 2 {
		t.Errorf("after Close: %v, logins %d", err, f.srv.Logins())
	}
}
