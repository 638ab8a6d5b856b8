package api_test

import (
	"strings"
	"testing"

	"github.com/flip-trust/node/shared/disclosure/egresscheck"
)

// The import status route writes its counts only as a disclosure.Released,
// and its payload type is built only where it is released.
func TestImportStatusPassesDisclosure(t *testing.T) {
	t.Parallel()
	got, err := egresscheck.Check(".", egresscheck.Rules{
		Senders:  []string{"importStatus"},
		Payloads: map[string][]string{"releasedRetrieval": {"api.go"}, "ReleasedCounts": {"types.go"}},
	})
	if err != nil || len(got) > 0 {
		t.Fatalf("egress check: %v\n%s", err, strings.Join(got, "\n"))
	}
}
