package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	c, err := Load(env(map[string]string{"DEV_HUB_ADMIN_TOKEN": "0123456789abcdef", "AES_KEY_BASE64": key, "RATE_LIMIT_RESULT_PER_MIN": ""}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != DefaultAddr || c.AdminAddr != DefaultAdminAddr || c.DataDir != DefaultDataDir || c.StaleTimeout != 30*time.Minute ||
		c.MaxRetries != 3 || c.SweepInterval != 10*time.Minute || c.RatePending != 30 || c.RateHeartbeat != 30 || c.RateResult != 60 {
		t.Fatalf("defaults %+v", c)
	}
	safe := c.Safe()
	if safe["DEV_HUB_ADMIN_TOKEN"] == "0123456789abcdef" || safe["AES_KEY_BASE64"] == key {
		t.Fatalf("Safe leaks a secret: %v", safe)
	}
}

func TestLoadReportsEveryProblem(t *testing.T) {
	t.Parallel()
	_, err := Load(env(map[string]string{
		"AES_KEY_BASE64": "c2hvcnQ=", "TASK_MAX_RETRIES": "-1", "RATE_LIMIT_PENDING_PER_MIN": "x",
		"LOG_LEVEL": "loud", "DEV_HUB_ADDR": "nope", "TASK_STALE_TIMEOUT_SECONDS": "0",
	}))
	if err == nil {
		t.Fatal("bad configuration accepted")
	}
	for _, want := range []string{"DEV_HUB_ADMIN_TOKEN", "AES_KEY_BASE64", "TASK_MAX_RETRIES", "RATE_LIMIT_PENDING_PER_MIN", "LOG_LEVEL", "DEV_HUB_ADDR", "TASK_STALE_TIMEOUT_SECONDS"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("problems do not name %s:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "c2hvcnQ=") {
		t.Error("a problem quotes the AES key")
	}
}

func TestSecretsFromFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	aes := filepath.Join(dir, "aes")
	if err := os.WriteFile(tok, []byte("file-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(aes, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(env(map[string]string{"DEV_HUB_ADMIN_TOKEN_FILE": tok, "AES_KEY_BASE64_FILE": aes, "TASK_STALE_TIMEOUT_SECONDS": "1.5"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.AdminToken != "file-token-0123456789" || c.AESKeyBase64 != key || c.StaleTimeout != 1500*time.Millisecond {
		t.Fatalf("loaded %+v", c)
	}
}
