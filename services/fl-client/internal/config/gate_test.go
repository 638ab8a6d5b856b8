package config

import (
	"strings"
	"testing"
)

func TestEgressGateSettings(t *testing.T) {
	t.Parallel()
	e := good()
	c, err := Load(env(e))
	if err != nil || c.EgressGate != "on" || c.TrustAPIURL != "" {
		t.Fatalf("defaults: gate %q, url %q, %v", c.EgressGate, c.TrustAPIURL, err)
	}
	e["TRUST_API_URL"], e["EGRESS_GATE"] = "http://trust-api:8000", "OFF"
	if c, err = Load(env(e)); err != nil || c.EgressGate != "off" || c.TrustAPIURL != "http://trust-api:8000" {
		t.Fatalf("set: %+v, %v", c.EgressGate, err)
	}
	e["ENV"] = "production"
	if _, err := Load(env(e)); err == nil || !strings.Contains(err.Error(), "EGRESS_GATE: off is for development only") {
		t.Errorf("gate off in production: %v", err)
	}
	e["ENV"], e["EGRESS_GATE"] = "development", "maybe"
	if _, err := Load(env(e)); err == nil || !strings.Contains(err.Error(), `EGRESS_GATE: "maybe"`) {
		t.Errorf("unknown gate setting: %v", err)
	}
}
