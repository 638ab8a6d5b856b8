package config

import (
	"strings"
	"testing"
)

func TestPrivacyBudgets(t *testing.T) {
	t.Parallel()
	const p = "3f2a1b0c-9d8e-4f7a-8b6c-5d4e3f2a1b0c"
	e := minimal()
	e["PRIVACY_BUDGETS"] = p + "=8:1e-6"
	c, err := Load(env(e))
	if err != nil {
		t.Fatal(err)
	}
	if b := c.Budgets[p]; b.Epsilon != 8 || b.Delta != 1e-6 {
		t.Errorf("budget %+v", b)
	}
	e["PRIVACY_BUDGETS"] = "nope=1"
	_, err = Load(env(e))
	if err == nil || strings.Count(err.Error(), "not a UUID") != 1 || !strings.Contains(err.Error(), "PRIVACY_BUDGETS") {
		t.Errorf("a bad budget is reported once: %v", err)
	}
}
