package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func good() map[string]string {
	return map[string]string{
		"FL_SERVER_URL":              "https://fl.hub.example",
		"FL_CLIENT_NAME":             "Trust_1",
		"FL_CLIENT_SECRET":           strings.Repeat("s", 43),
		"TRUST_INTERNAL_SERVICE_KEY": strings.Repeat("k", 32),
	}
}

func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	c, err := Load(env(good()))
	if err != nil {
		t.Fatal(err)
	}
	if c.Runner != RunnerDocker || c.MinCount != 10 || c.PollWait.Seconds() != 30 || c.JobMemory != 8192<<20 {
		t.Errorf("defaults: %+v", c)
	}
	if got := c.Safe()["FL_CLIENT_SECRET"]; got == good()["FL_CLIENT_SECRET"] {
		t.Error("Safe shows the client secret")
	}
}

func TestLoadFailsClosed(t *testing.T) {
	t.Parallel()
	_, err := Load(env(map[string]string{}))
	if err == nil {
		t.Fatal("loaded without server, name and secret")
	}
	for _, want := range []string{"FL_SERVER_URL", "FL_CLIENT_NAME", "FL_CLIENT_SECRET", "TRUST_INTERNAL_SERVICE_KEY"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
}

func TestLoadRejects(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		set  map[string]string
		want string
	}{
		"noise without clipping": {map[string]string{"FL_DP_NOISE_MULTIPLIER": "1.1"}, "needs a clipping norm"},
		"negative clip":          {map[string]string{"FL_DP_CLIP_NORM": "-1"}, "FL_DP_CLIP_NORM"},
		"unpinned image":         {map[string]string{"FL_ALLOWED_IMAGES": "job:latest"}, "not pinned by digest"},
		"bad runner":             {map[string]string{"FL_RUNNER": "kubernetes"}, "FL_RUNNER"},
		"bad name":               {map[string]string{"FL_CLIENT_NAME": "Trust 1"}, "kit slot"},
		"short secret":           {map[string]string{"FL_CLIENT_SECRET": "short"}, "at least 32"},
		"half mTLS":              {map[string]string{"FL_CLIENT_CERT_FILE": "/c.pem"}, "set both"},
		"process jobs":           {map[string]string{"FL_PROCESS_JOBS": "torch"}, "name=command"},
		"min count":              {map[string]string{"FL_MIN_COUNT": "0"}, "FL_MIN_COUNT"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m := good()
			for k, v := range c.set {
				m[k] = v
			}
			_, err := Load(env(m))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to mention %q", err, c.want)
			}
		})
	}
}

func TestProcessJobsAndSecretFile(t *testing.T) {
	t.Parallel()
	m := good()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(strings.Repeat("f", 40)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	delete(m, "FL_CLIENT_SECRET")
	m["FL_CLIENT_SECRET_FILE"] = p
	m["FL_PROCESS_JOBS"] = "pytorch-example=python3 /opt/jobs/train.py ; other=/bin/job --fast"
	c, err := Load(env(m))
	if err != nil {
		t.Fatal(err)
	}
	if c.ClientSecret != strings.Repeat("f", 40) {
		t.Errorf("secret from file = %q", c.ClientSecret)
	}
	if got := c.ProcessJobs["pytorch-example"]; len(got) != 2 || got[0] != "python3" {
		t.Errorf("process jobs = %v", c.ProcessJobs)
	}
	if got := c.ProcessJobs["other"]; len(got) != 2 || got[1] != "--fast" {
		t.Errorf("process jobs = %v", c.ProcessJobs)
	}
}
