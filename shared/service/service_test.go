package service

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

type cfg struct{ level string }

func (c cfg) Logging() (string, string, string) { return c.level, "", "test" }
func (cfg) Version(build string) string         { return build }
func (cfg) Safe() map[string]any                { return map[string]any{"SECRET": "[REDACTED]"} }

type app struct{ runErr error }

func (app) Listen() (net.Addr, error)   { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, nil }
func (a app) Run(context.Context) error { return a.runErr }
func noEnv(string) string               { return "" }

func spec(loadErr, newErr, runErr error) Spec[cfg] {
	return Spec[cfg]{Name: "svc", AddrEnv: "SVC_ADDR", Build: "1.2.3",
		Load: func(func(string) string) (cfg, error) { return cfg{level: "INFO"}, loadErr },
		New: func(cfg, *slog.Logger, *prometheus.Registry, string) (App, error) {
			return app{runErr: runErr}, newErr
		}}
}

func TestMainExitCodes(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(spec(errors.New("A_VAR is required\nB_VAR: bad"), nil, nil), nil, noEnv, &out, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), "svc: invalid configuration:\n  - A_VAR is required\n  - B_VAR: bad") {
		t.Errorf("configuration problems: exit %d, stderr %q", code, errOut.String())
	}
	errOut.Reset()
	if code := run(spec(nil, errors.New("boom"), nil), nil, noEnv, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "svc: boom") {
		t.Errorf("startup failure: exit %d, stderr %q", code, errOut.String())
	}
	out.Reset()
	if code := run(spec(nil, nil, nil), nil, noEnv, &out, &errOut); code != 0 ||
		!strings.Contains(out.String(), `"msg":"listening"`) || !strings.Contains(out.String(), `"version":"1.2.3"`) {
		t.Errorf("clean run: exit %d, log %q", code, out.String())
	}
	if code := run(spec(nil, nil, errors.New("crashed")), nil, noEnv, &out, &errOut); code != 1 {
		t.Errorf("run error: exit %d", code)
	}
	// -health probes the address in AddrEnv (nothing listens on port 1).
	if code := run(spec(nil, nil, nil), []string{"-health"}, func(string) string { return "127.0.0.1:1" }, &out, &errOut); code != 1 {
		t.Errorf("-health with nothing listening: exit %d", code)
	}
	if code := run(spec(nil, nil, nil), []string{"-nope"}, noEnv, &out, &errOut); code != 1 {
		t.Errorf("unknown flag: exit %d", code)
	}
}
