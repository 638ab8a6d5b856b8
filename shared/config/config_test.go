package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"unset", nil, "def"},
		{"empty means default", map[string]string{"X": ""}, "def"},
		{"blank means default", map[string]string{"X": "  \t"}, "def"},
		{"set", map[string]string{"X": "value"}, "value"},
		{"trimmed", map[string]string{"X": " value \n"}, "value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := NewLoader(env(tc.env))
			if got := l.String("X", "def"); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			if l.Err() != nil {
				t.Fatalf("unexpected problem %v", l.Err())
			}
		})
	}
}

func TestRequired(t *testing.T) {
	t.Parallel()
	l := NewLoader(env(map[string]string{"A": "x", "B": ""}))
	if got := l.Required("A"); got != "x" {
		t.Fatalf("A = %q", got)
	}
	if l.Err() != nil {
		t.Fatalf("set variable reported: %v", l.Err())
	}
	l.Required("B")
	l.Required("C")
	err := l.Err()
	if err == nil || !strings.Contains(err.Error(), "B is required") || !strings.Contains(err.Error(), "C is required") {
		t.Fatalf("err = %v", err)
	}
	if len(l.Problems()) != 2 {
		t.Fatalf("problems %v", l.Problems())
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSecret(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-value-do-not-print"
	tests := []struct {
		name       string
		env        map[string]string
		required   bool
		want       string
		wantErrHas string // "" means no problem
	}{
		{"from env", map[string]string{"K": secret}, true, secret, ""},
		{"from file", map[string]string{"K_FILE": writeFile(t, secret+"\n")}, true, secret, ""},
		{"from file crlf", map[string]string{"K_FILE": writeFile(t, secret+"\r\n")}, true, secret, ""},
		{"from file no newline", map[string]string{"K_FILE": writeFile(t, secret)}, true, secret, ""},
		{"file keeps inner and leading bytes", map[string]string{"K_FILE": writeFile(t, " a\nb\n")}, true, " a\nb", ""},
		{"only one newline trimmed", map[string]string{"K_FILE": writeFile(t, secret+"\n\n")}, true, secret + "\n", ""},
		{"empty env uses file", map[string]string{"K": "", "K_FILE": writeFile(t, secret)}, true, secret, ""},
		{"both set", map[string]string{"K": secret, "K_FILE": writeFile(t, secret)}, true, "", "set only one of K and K_FILE"},
		{"missing file", map[string]string{"K_FILE": "/nonexistent/dir/secret"}, false, "", "K_FILE: read secret file"},
		{"empty file required", map[string]string{"K_FILE": writeFile(t, "\n")}, true, "", "K is required"},
		{"empty file optional", map[string]string{"K_FILE": writeFile(t, "")}, false, "", ""},
		{"unset required", nil, true, "", "K is required (or set K_FILE)"},
		{"unset optional", nil, false, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := NewLoader(env(tc.env))
			got := l.Secret("K", tc.required)
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			err := l.Err()
			if tc.wantErrHas == "" {
				if err != nil {
					t.Fatalf("unexpected problem %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErrHas) {
				t.Fatalf("err %v, want it to contain %q", err, tc.wantErrHas)
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("problem text leaks the secret: %v", err)
			}
		})
	}
}

func TestInt(t *testing.T) {
	t.Parallel()
	tests := []struct {
		val        string
		want       int
		wantErrHas string
	}{
		{"", 7, ""},
		{"42", 42, ""},
		{" 42 ", 42, ""},
		{"-3", -3, ""},
		{"abc", 7, `N: "abc" is not an integer`},
		{"4.5", 7, `N: "4.5" is not an integer`},
		{"99999999999999999999", 7, "out of range"},
	}
	for _, tc := range tests {
		t.Run(tc.val, func(t *testing.T) {
			t.Parallel()
			l := NewLoader(env(map[string]string{"N": tc.val}))
			if got := l.Int("N", 7); got != tc.want {
				t.Fatalf("got %d, want %d", got, tc.want)
			}
			checkProblem(t, l.Err(), tc.wantErrHas)
		})
	}
}

func TestFloat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		val        string
		want       float64
		wantErrHas string
	}{
		{"", 1.5, ""},
		{"0.25", 0.25, ""},
		{"NaN", 1.5, "not a number"},
		{"inf", 1.5, "not a number"},
		{"x", 1.5, "not a number"},
	}
	for _, tc := range tests {
		t.Run(tc.val, func(t *testing.T) {
			t.Parallel()
			l := NewLoader(env(map[string]string{"F": tc.val}))
			if got := l.Float("F", 1.5); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			checkProblem(t, l.Err(), tc.wantErrHas)
		})
	}
}

func TestSeconds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		val        string
		want       time.Duration
		wantErrHas string
	}{
		{"", 5 * time.Second, ""},
		{"30", 30 * time.Second, ""},
		{"0.5", 500 * time.Millisecond, ""},
		{"0", 0, ""},
		{"1e3", 1000 * time.Second, ""},
		{"-1", 5 * time.Second, "must not be negative"},
		{"5s", 5 * time.Second, `S: "5s" is not a number of seconds`},
		{"NaN", 5 * time.Second, "not a number of seconds"},
		{"1e300", 5 * time.Second, "out of range"},
	}
	for _, tc := range tests {
		t.Run(tc.val, func(t *testing.T) {
			t.Parallel()
			l := NewLoader(env(map[string]string{"S": tc.val}))
			if got := l.Seconds("S", 5*time.Second); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			checkProblem(t, l.Err(), tc.wantErrHas)
		})
	}
}

func TestBool(t *testing.T) {
	t.Parallel()
	tests := []struct {
		val        string
		def, want  bool
		wantErrHas string
	}{
		{"", true, true, ""},
		{"", false, false, ""},
		{"true", false, true, ""},
		{"TRUE", false, true, ""},
		{"1", false, true, ""},
		{"yes", false, true, ""},
		{"on", false, true, ""},
		{"false", true, false, ""},
		{"0", true, false, ""},
		{"No", true, false, ""},
		{"off", true, false, ""},
		{"maybe", true, true, `B: "maybe" is not a boolean`},
	}
	for _, tc := range tests {
		t.Run(tc.val, func(t *testing.T) {
			t.Parallel()
			l := NewLoader(env(map[string]string{"B": tc.val}))
			if got := l.Bool("B", tc.def); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			checkProblem(t, l.Err(), tc.wantErrHas)
		})
	}
}

func TestURL(t *testing.T) {
	t.Parallel()
	const def = "http://data-access-api:8000"
	tests := []struct {
		val        string
		want       string
		wantErrHas string
	}{
		{"", def, ""},
		{"https://hub.example.org/api", "https://hub.example.org/api", ""},
		{"http://127.0.0.1:8080/api", "http://127.0.0.1:8080/api", ""},
		{"ftp://hub.example.org", def, `scheme must be http or https, got "ftp"`},
		{"hub.example.org/api", def, "scheme must be http or https"},
		{"/api", def, "scheme must be http or https"},
		{"http://", def, "no host"},
		{"http://:8080", def, "no host"},
		{"http://exa mple.org", def, "not a valid URL"},
		{"http://user:hunter2@%zz", def, "not a valid URL"},
	}
	for _, tc := range tests {
		t.Run(tc.val, func(t *testing.T) {
			t.Parallel()
			l := NewLoader(env(map[string]string{"U": tc.val}))
			if got := l.URL("U", def); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			checkProblem(t, l.Err(), tc.wantErrHas)
			if err := l.Err(); err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("problem leaks URL credentials: %v", err)
			}
		})
	}
}

func TestAllProblemsAtOnce(t *testing.T) {
	t.Parallel()
	l := NewLoader(env(map[string]string{
		"CENTRAL_HUB_API_URL":   "hub:8080",
		"TASK_WORKERS":          "four",
		"POLL_INTERVAL_SECONDS": "-2",
		"AES_KEY_BASE64":        "k",
		"AES_KEY_BASE64_FILE":   "/run/secrets/aes",
		"ENABLE_X":              "perhaps",
	}))
	l.URL("CENTRAL_HUB_API_URL", "")
	l.Int("TASK_WORKERS", 4)
	l.Seconds("POLL_INTERVAL_SECONDS", 5*time.Second)
	l.Secret("AES_KEY_BASE64", true)
	l.Secret("TRUST_API_KEY", true)
	l.Bool("ENABLE_X", false)
	l.Required("EXPECTED_TRUST_ID")
	l.Problem("HEARTBEAT_INTERVAL_SECONDS (%d) must not exceed %d", 90, 60)
	err := l.Err()
	if err == nil {
		t.Fatal("no error")
	}
	want := []string{
		"CENTRAL_HUB_API_URL: scheme must be http or https",
		`TASK_WORKERS: "four" is not an integer`,
		"POLL_INTERVAL_SECONDS",
		"set only one of AES_KEY_BASE64 and AES_KEY_BASE64_FILE",
		"TRUST_API_KEY is required",
		"ENABLE_X",
		"EXPECTED_TRUST_ID is required",
		"HEARTBEAT_INTERVAL_SECONDS (90) must not exceed 60",
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d problems, want %d:\n%v", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) {
			t.Errorf("problem %d = %q, want it to contain %q", i, lines[i], w)
		}
	}
	if got := l.Problems(); len(got) != len(want) {
		t.Fatalf("Problems() has %d entries", len(got))
	}
	l.Problems()[0] = errors.New("mutated")
	if strings.Contains(l.Err().Error(), "mutated") {
		t.Fatal("Problems() exposes internal state")
	}
}

func TestNilGetenv(t *testing.T) {
	t.Parallel()
	l := NewLoader(nil)
	if got := l.String("X", "d"); got != "d" {
		t.Fatalf("got %q", got)
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":        "(unset)",
		"abc":     "[REDACTED len=3]",
		"hunter2": "[REDACTED len=7]",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func checkProblem(t *testing.T, err error, wantHas string) {
	t.Helper()
	if wantHas == "" {
		if err != nil {
			t.Fatalf("unexpected problem %v", err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), wantHas) {
		t.Fatalf("err %v, want it to contain %q", err, wantHas)
	}
}
