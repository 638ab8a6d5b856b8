// Package config reads a service's settings from environment variables the
// way every trust node service does: FLIP's variable names, an empty value
// meaning "use the default" (FLIP kit files export commented-out keys as
// empty), every secret also readable from <NAME>_FILE (Docker and Swarm
// secrets), and every problem collected so that startup reports them all at
// once.
package config

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// FileSuffix is appended to a secret's name to give the variable holding the
// path of a file with the secret's value.
const FileSuffix = "_FILE"

// Loader reads typed values through a getenv function and records what is
// wrong with them. Getters always return a usable value (the default when the
// variable is empty or invalid); Err reports the problems. A Loader is meant
// for one goroutine at startup and is not safe for concurrent use.
type Loader struct {
	getenv   func(string) string
	readFile func(string) ([]byte, error)
	problems []error
}

// NewLoader returns a Loader reading variables through getenv (os.Getenv in
// main, a map lookup in tests). A nil getenv reads nothing.
func NewLoader(getenv func(string) string) *Loader {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	return &Loader{getenv: getenv, readFile: os.ReadFile}
}

// raw returns the variable with surrounding whitespace removed.
func (l *Loader) raw(name string) string { return strings.TrimSpace(l.getenv(name)) }

// String returns the variable, or def when it is empty or unset.
func (l *Loader) String(name, def string) string {
	if v := l.raw(name); v != "" {
		return v
	}
	return def
}

// Required returns the variable and records "NAME is required" when it is
// empty or unset.
func (l *Loader) Required(name string) string {
	v := l.raw(name)
	if v == "" {
		l.Problem("%s is required", name)
	}
	return v
}

// Secret returns the secret NAME, taken from the variable itself or from the
// file named by NAME_FILE (one trailing newline, LF or CRLF, trimmed). Setting
// both, an unreadable file, or (when required) no value at all are problems.
// Problems never quote the secret.
func (l *Loader) Secret(name string, required bool) string {
	v := l.raw(name)
	path := l.raw(name + FileSuffix)
	switch {
	case v != "" && path != "":
		l.Problem("set only one of %s and %s%s", name, name, FileSuffix)
		return ""
	case path != "":
		b, err := l.readFile(path)
		if err != nil {
			l.Problem("%s%s: read secret file: %v", name, FileSuffix, err)
			return ""
		}
		s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if s == "" && required {
			l.Problem("%s is required (%s%s names an empty file)", name, name, FileSuffix)
		}
		return s
	case v == "" && required:
		l.Problem("%s is required (or set %s%s)", name, name, FileSuffix)
	}
	return v
}

// Int returns the variable as a decimal integer, or def when it is empty. A
// value that is not an integer is a problem and gives def.
func (l *Loader) Int(name string, def int) int {
	v := l.raw(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			l.Problem("%s: %q is out of range", name, v)
		} else {
			l.Problem("%s: %q is not an integer", name, v)
		}
		return def
	}
	return n
}

// Float returns the variable as a finite number, or def when it is empty.
func (l *Loader) Float(name string, def float64) float64 {
	v := l.raw(name)
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		l.Problem("%s: %q is not a number", name, v)
		return def
	}
	return f
}

// Seconds returns the variable, a number of seconds (fractions allowed, as in
// FLIP's POLL_INTERVAL_SECONDS=0.5), as a Duration, or def when it is empty.
// Negative or non-numeric values are problems and give def.
func (l *Loader) Seconds(name string, def time.Duration) time.Duration {
	v := l.raw(name)
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	switch {
	case err != nil || math.IsNaN(f) || math.IsInf(f, 0):
		l.Problem("%s: %q is not a number of seconds", name, v)
		return def
	case f < 0:
		l.Problem("%s: %q must not be negative", name, v)
		return def
	case f > math.MaxInt64/float64(time.Second):
		l.Problem("%s: %q is out of range", name, v)
		return def
	}
	return time.Duration(f * float64(time.Second))
}

// Bool returns the variable as a boolean (1/0, true/false, yes/no, on/off, any
// case), or def when it is empty.
func (l *Loader) Bool(name string, def bool) bool {
	v := l.raw(name)
	if v == "" {
		return def
	}
	switch strings.ToLower(v) {
	case "1", "t", "true", "yes", "y", "on":
		return true
	case "0", "f", "false", "no", "n", "off":
		return false
	}
	l.Problem("%s: %q is not a boolean (use true or false)", name, v)
	return def
}

// URL returns the variable, or def when it is empty, after checking that it
// is an absolute http or https URL with a host. An invalid value is a problem
// and gives def. The default itself is not checked.
func (l *Loader) URL(name, def string) string {
	v := l.raw(name)
	if v == "" {
		return def
	}
	if err := CheckURL(v); err != nil {
		l.Problem("%s: %v", name, err)
		return def
	}
	return v
}

// CheckURL reports why s is not an absolute http(s) URL with a host. Its
// errors do not quote credentials embedded in s.
func CheckURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("scheme must be http or https, got %q", u.Scheme)
	}
	if u.Host == "" || u.Hostname() == "" {
		return errors.New("URL has no host")
	}
	return nil
}

// Problem records a custom problem (for example a cross-field check).
func (l *Loader) Problem(format string, args ...any) {
	l.problems = append(l.problems, fmt.Errorf(format, args...))
}

// Problems returns the problems recorded so far, in order.
func (l *Loader) Problems() []error {
	return append([]error(nil), l.problems...)
}

// Err returns every recorded problem joined with errors.Join, one per line,
// or nil when there is none.
func (l *Loader) Err() error {
	return errors.Join(l.problems...)
}

// Redact returns a loggable stand-in for a secret: "(unset)" for "", and
// otherwise "[REDACTED len=N]" with N its length in bytes.
func Redact(s string) string {
	if s == "" {
		return "(unset)"
	}
	return fmt.Sprintf("[REDACTED len=%d]", len(s))
}
