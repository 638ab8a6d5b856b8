package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	digestB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func writePolicy(t *testing.T, doc string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "site.toml")
	if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The site policy file gives the DP filter's parameters, the metrics floor
// and the allowed images; the environment may only be stricter.
func TestSitePolicyFile(t *testing.T) {
	t.Parallel()
	path := writePolicy(t, `[disclosure]
floor = 25

[dp]
clip_norm = 1.5
noise_multiplier = 1.1
delta = 1e-5

[images]
allowed = ["`+digestA+`"]
`)
	m := good()
	m["SITE_POLICY_FILE"] = path
	c, err := Load(env(m))
	if err != nil {
		t.Fatal(err)
	}
	if c.ClipNorm != 1.5 || c.NoiseMultiplier != 1.1 {
		t.Errorf("dp = clip %v noise %v, want the file's 1.5 and 1.1", c.ClipNorm, c.NoiseMultiplier)
	}
	if c.MinCount != 25 {
		t.Errorf("min count = %d, want the file's floor 25 over the default 10", c.MinCount)
	}
	if len(c.AllowedImages) != 1 || c.AllowedImages[0] != digestA {
		t.Errorf("allowed images = %v, want the file's", c.AllowedImages)
	}

	m["FL_DP_NOISE_MULTIPLIER"] = "2"
	m["FL_ALLOWED_IMAGES"] = "registry.local/job@" + digestA
	if c, err = Load(env(m)); err != nil {
		t.Fatal(err)
	}
	if c.NoiseMultiplier != 2 || c.AllowedImages[0] != "registry.local/job@"+digestA {
		t.Errorf("a stricter environment is kept: noise %v, images %v", c.NoiseMultiplier, c.AllowedImages)
	}

	m["FL_DP_NOISE_MULTIPLIER"] = "0.5"
	m["FL_ALLOWED_IMAGES"] = "registry.local/job@" + digestB
	_, err = Load(env(m))
	for _, want := range []string{"FL_DP_NOISE_MULTIPLIER: 0.5 is below", "not among the site policy's"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to say %q", err, want)
		}
	}
}
