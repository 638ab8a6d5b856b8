package hubapi

import (
	"encoding/json"
	"testing"
)

func TestValidTaskID(t *testing.T) {
	t.Parallel()
	cases := map[string]bool{
		"6f1c1b7e-3c1f-4d3e-9a55-0b8d7c1e2f3a":  true,
		"6F1C1B7E-3C1F-4D3E-9A55-0B8D7C1E2F3A":  true,
		"../other-resource":                     false,
		"6f1c1b7e3c1f4d3e9a550b8d7c1e2f3a":      false,
		"6f1c1b7e-3c1f-4d3e-9a55-0b8d7c1e2f3a/": false,
		"":                                      false,
	}
	for id, want := range cases {
		if got := ValidTaskID(id); got != want {
			t.Errorf("ValidTaskID(%q) = %v, want %v", id, got, want)
		}
	}
}

func TestTaskErrorResult(t *testing.T) {
	t.Parallel()
	if got := TaskErrorResult("boom <&>", nil); got != `{"error": "boom <&>"}` {
		t.Fatalf("without code: %s", got)
	}
	code := 404
	if got := TaskErrorResult("404: missing", &code); got != `{"error": "404: missing", "status_code": 404}` {
		t.Fatalf("with code: %s", got)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(TaskErrorResult("404: missing", &code)), &v); err != nil {
		t.Fatal(err)
	}
	if v["error"] != "404: missing" || v["status_code"] != float64(404) {
		t.Fatalf("with code: %v", v)
	}
}

func TestTaskTypes(t *testing.T) {
	t.Parallel()
	if len(TaskTypes) != 7 {
		t.Fatalf("%d task types, want 7", len(TaskTypes))
	}
	for _, tt := range TaskTypes {
		if !tt.Valid() {
			t.Errorf("%s not valid", tt)
		}
	}
	if TaskType("train_model").Valid() {
		t.Error("unknown type accepted")
	}
}

func TestHeartbeatReplyOmitsAbsentHubFields(t *testing.T) {
	t.Parallel()
	b, _ := json.Marshal(HeartbeatReply{Identity: Identity{"id", "name"}, Message: "Heartbeat recorded"})
	if string(b) != `{"trust_id":"id","trust_name":"name","message":"Heartbeat recorded"}` {
		t.Fatalf("%s", b)
	}
}
