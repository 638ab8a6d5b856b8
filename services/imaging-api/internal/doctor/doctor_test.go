package doctor

import (
	"context"
	"testing"
	"time"

	"github.com/flip-trust/node/services/imaging-api/internal/orthanc"
	"github.com/flip-trust/node/services/imaging-api/internal/orthanctest"
	"github.com/flip-trust/node/shared/doctor"
)

func runAll(t *testing.T, checks []doctor.Check) []doctor.Result {
	t.Helper()
	var out []doctor.Result
	for _, c := range checks {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out = append(out, c.Run(ctx))
		cancel()
	}
	return out
}

// TestStagingAndEcho runs against a real staging Orthanc and PACS: both pass,
// wrong credentials and an unknown modality fail, and a stopped PACS fails
// the C-ECHO while staging still passes.
func TestStagingAndEcho(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pair, err := orthanctest.StartPair(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer pair.Close()
	st := pair.Staging
	client := func(user, pw string) *orthanc.Client {
		c, err := orthanc.New(orthanc.Config{URL: st.URL, User: user, Password: pw, DIMSETimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	good := client(st.User, st.Password)

	if r := runAll(t, StagingChecks(good, nil, orthanctest.PACSAET)); r[0].Status != doctor.StatusPass || r[1].Status != doctor.StatusPass {
		t.Fatalf("healthy pair: %+v", r)
	}
	if r := runAll(t, StagingChecks(client(st.User, "wrong"), nil, orthanctest.PACSAET)); r[0].Status != doctor.StatusFail || r[1].Status != doctor.StatusFail {
		t.Errorf("wrong password: %+v", r)
	}
	if r := runAll(t, StagingChecks(good, nil, "NOPACS")); r[0].Status != doctor.StatusPass || r[1].Status != doctor.StatusFail || r[1].Fix == "" {
		t.Errorf("unknown modality: %+v", r)
	}
	if err := pair.PACS.Stop(); err != nil {
		t.Fatal(err)
	}
	if r := runAll(t, StagingChecks(good, nil, orthanctest.PACSAET)); r[0].Status != doctor.StatusPass || r[1].Status != doctor.StatusFail {
		t.Errorf("PACS stopped: %+v", r)
	}
}
