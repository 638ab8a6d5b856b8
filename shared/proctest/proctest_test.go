package proctest

import (
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestStartAndWait(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	Start(t, "sleeper", sh, nil, "-c", "echo started; sleep 30")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer srv.Close()
	WaitHTTP(t, srv.URL)
	if a := FreeAddr(t); !strings.HasPrefix(a, "127.0.0.1:") {
		t.Errorf("FreeAddr %q", a)
	}
	var b Buffer
	_, _ = b.Write([]byte("x"))
	if b.String() != "x" {
		t.Errorf("Buffer %q", b.String())
	}
}

func TestKill(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	p := Start(t, "sleeper", sh, nil, "-c", "echo up; exec sleep 30")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.Output(), "up") {
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("not up: %q", p.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.Kill()
	if !p.Exited() {
		t.Fatal("still running after Kill")
	}
	p.Kill() // again: nothing to do
}
