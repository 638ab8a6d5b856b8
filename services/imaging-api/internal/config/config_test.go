package config

import (
	"strings"
	"testing"
	"time"
)

func load(m map[string]string) (Config, error) { return Load(func(k string) string { return m[k] }) }

func TestDefaultsAndProblems(t *testing.T) {
	c, err := load(map[string]string{"BASE_IMAGES_DOWNLOAD_DIR": "/data/images", "AES_KEY_BASE64": "k"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Backend != BackendOrthanc || c.PACSModality != "PACS" || c.StagingAET != "STAGING" || c.ImportConcurrency != 4 ||
		c.ImportAttempts != 3 || c.CacheRetentionPeriod != 168*time.Hour || !c.ReimportEnabled {
		t.Errorf("defaults %+v", c)
	}
	_, err = load(map[string]string{"IMAGING_BACKEND": "xnat", "IMPORT_CONCURRENCY": "0", "IMAGE_CACHE_SWEEP_INTERVAL_MINUTES": "0.5"})
	for _, want := range []string{"BASE_IMAGES_DOWNLOAD_DIR", "AES_KEY_BASE64", "XNAT_SERVICE_USER", "IMPORT_CONCURRENCY", "IMAGE_CACHE_SWEEP_INTERVAL_MINUTES"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
	if _, err := load(map[string]string{"BASE_IMAGES_DOWNLOAD_DIR": "/d", "AES_KEY_BASE64": "k", "IMAGING_BACKEND": "dicomweb"}); err == nil {
		t.Error("unknown backend accepted")
	}
}
