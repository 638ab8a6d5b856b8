package api_test

import (
	"strings"
	"testing"

	"github.com/flip-trust/node/shared/disclosure/egresscheck"
)

// The statistics route writes its body only as a disclosure.Released, and
// its payload type is built only where it is released.
func TestStatisticsPassDisclosure(t *testing.T) {
	t.Parallel()
	got, err := egresscheck.Check(".", egresscheck.Rules{
		Senders:  []string{"statistics"},
		Payloads: map[string][]string{"StatisticsResponse": {"handlers.go"}},
	})
	if err != nil || len(got) > 0 {
		t.Fatalf("egress check: %v\n%s", err, strings.Join(got, "\n"))
	}
}
