package xnat_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/flip-trust/node/services/imaging-api/internal/xnat"
	"github.com/flip-trust/node/services/imaging-api/internal/xnattest"
)

func TestCreateAndListUsers(t *testing.T) {
	f := newFixture(t, xnattest.Options{}, nil)
	ctx := context.Background()
	u, err := f.cl.CreateUser(ctx, xnat.NewUser{Username: "alice", Password: "Pw-1!x", Email: "Alice@Example.org",
		FirstName: "alice", LastName: "alice", Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	if u.Username != "alice" || u.Email != "Alice@Example.org" || !u.Enabled || u.ID == 0 || u.LastSuccessfulLogin != nil {
		t.Errorf("created %+v", u)
	}
	posted := f.srv.RequestsTo("POST", "/xapi/users")
	var body map[string]any
	if len(posted) != 1 || json.Unmarshal(posted[0].Body, &body) != nil || body["password"] != "Pw-1!x" || body["enabled"] != true ||
		posted[0].Header.Get("Content-Type") != "application/json" {
		t.Errorf("create request %+v", posted)
	}
	if _, err := f.cl.CreateUser(ctx, xnat.NewUser{Username: "alice", Password: "x", Email: "a2@example.org"}); !errors.Is(err, xnat.ErrAlreadyExists) {
		t.Errorf("duplicate: %v", err)
	}
	users, err := f.cl.ListUsers(ctx)
	if err != nil || len(users) != 2 {
		t.Fatalf("users %+v %v", users, err)
	}
	if got, err := f.cl.UserByEmail(ctx, "alice@example.ORG"); err != nil || got.Username != "alice" {
		t.Errorf("by email: %+v %v", got, err)
	}
	_, err = f.cl.UserByEmail(ctx, "nobody@example.org")
	if !errors.Is(err, xnat.ErrNotFound) || strings.Contains(err.Error(), "nobody") {
		t.Errorf("unknown email: %v", err)
	}
}

func TestEnableDisableByEmail(t *testing.T) {
	f := newFixture(t, xnattest.Options{}, nil)
	ctx := context.Background()
	if _, err := f.srv.AddUser(xnattest.User{Username: "bob", Password: "pw", Email: "bob@example.org", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	u, err := f.cl.SetUserEnabledByEmail(ctx, "bob@example.org", false)
	if err != nil || u.Enabled || u.Username != "bob" || u.LastModified == nil {
		t.Fatalf("disable: %+v %v", u, err)
	}
	if st, _ := f.srv.UserState("bob"); st.Enabled {
		t.Error("server still has bob enabled")
	}
	put := f.srv.RequestsTo("PUT", "/xapi/users/bob")
	if len(put) != 1 || string(put[0].Body) != `{"email":"bob@example.org","enabled":false}` {
		t.Errorf("update request %+v", put)
	}
	// A disabled account cannot log in.
	loginReq, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/data/JSESSION", nil)
	loginReq.SetBasicAuth("bob", "pw")
	if resp, err := http.DefaultClient.Do(loginReq); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("disabled login: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// Nothing to change: XNAT answers 304 and the current profile is returned.
	u, changed, err := f.cl.UpdateUser(ctx, "bob", xnat.UserUpdate{Email: "bob@example.org", Enabled: false})
	if err != nil || changed || u.Username != "bob" || u.Enabled {
		t.Errorf("no-op update: %+v %v %v", u, changed, err)
	}
	if u, err := f.cl.SetUserEnabledByEmail(ctx, "bob@example.org", true); err != nil || !u.Enabled {
		t.Errorf("enable: %+v %v", u, err)
	}
	if _, err := f.cl.SetUserEnabledByEmail(ctx, "carol@example.org", true); !errors.Is(err, xnat.ErrNotFound) {
		t.Errorf("unknown email: %v", err)
	}
	if _, _, err := f.cl.UpdateUser(ctx, "carol", xnat.UserUpdate{Email: "c@example.org"}); !errors.Is(err, xnat.ErrNotFound) {
		t.Errorf("unknown user: %v", err)
	}
}

func TestProjectMembershipAndInvites(t *testing.T) {
	f := newFixture(t, xnattest.Options{}, nil)
	ctx := context.Background()
	if err := f.srv.AddProject(xnattest.Project{ID: "P1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.srv.AddUser(xnattest.User{Username: "dana", Password: "pw", Email: "dana@example.org", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	u, err := f.cl.AddUserToProject(ctx, "dana", "P1", "")
	if err != nil || u.Username != "dana" {
		t.Fatalf("add: %+v %v", u, err)
	}
	if st, _ := f.srv.ProjectState("P1"); st.Members["dana"] != "Members" {
		t.Errorf("members %v", st.Members)
	}
	if _, err := f.cl.AddUserToProject(ctx, "dana", "P1", xnat.RoleOwners); err != nil {
		t.Fatal(err)
	}
	members, err := f.cl.ProjectMembers(ctx, "P1")
	if err != nil || len(members) != 1 || members[0].Login != "dana" || members[0].DisplayName != "Owners" || members[0].GroupID != "P1_owner" {
		t.Errorf("members %+v %v", members, err)
	}
	if _, err := f.cl.AddUserToProject(ctx, "erin", "P1", xnat.RoleMembers); !errors.Is(err, xnat.ErrNotFound) {
		t.Errorf("unknown user: %v", err)
	}
	if n := len(f.srv.RequestsTo("PUT", "/data/projects/P1/users/Members/erin")); n != 0 {
		t.Error("membership requested for an unknown user")
	}

	tok, err := f.cl.IssueAliasToken(ctx, "dana")
	if err != nil {
		t.Fatal(err)
	}
	path := tok.SetupPath()
	rest, ok := strings.CutPrefix(path, "/app/template/XDATScreen_UpdateUser.vm?")
	q, perr := url.ParseQuery(rest)
	if !ok || perr != nil || q.Get("a") != tok.Alias || q.Get("s") != tok.Secret {
		t.Errorf("setup path %q", path)
	}
	// The token logs the user in (what the setup link relies on).
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/data/JSESSION", nil)
	req.SetBasicAuth(tok.Alias, tok.Secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("token login: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if _, err := f.cl.IssueAliasToken(ctx, "nobody"); !errors.Is(err, xnat.ErrNotFound) {
		t.Errorf("token for unknown user: %v", err)
	}
}

func TestSetupPathEscapesEverything(t *testing.T) {
	got := xnat.AliasToken{Alias: "a&b=c", Secret: "s/t?u v"}.SetupPath()
	want := "/app/template/XDATScreen_UpdateUser.vm?a=a%26b%3Dc&s=s%2Ft%3Fu%20v"
	if got != want {
		t.Errorf("SetupPath = %q, want %q", got, want)
	}
}

func TestUsernameFor(t *testing.T) {
	for _, tc := range []struct {
		email string
		taken []string
		want  string
	}{
		{"jane.doe@example.org", nil, "janedoe"},
		{"jane.doe@example.org", []string{"janedoe"}, "janedoe1"},
		{"jane.doe@example.org", []string{"janedoe", "janedoe1", "janedoe2"}, "janedoe3"},
		{"o'brien+tag@example.org", nil, "obrientag"},
		{"a-b c_d@example.org", nil, "a-b cd"},
		{"ünï@example.org", nil, "n"},
	} {
		taken := map[string]bool{}
		for _, n := range tc.taken {
			taken[n] = true
		}
		if got := xnat.UsernameFor(tc.email, taken); got != tc.want {
			t.Errorf("UsernameFor(%q, %v) = %q, want %q", tc.email, tc.taken, got, tc.want)
		}
	}
}
