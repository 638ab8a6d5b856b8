package xnat

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// User is an XNAT user profile (GET /xapi/users/profiles).
type User struct {
	LastModified        *int64 `json:"lastModified"`
	Username            string `json:"username"`
	Enabled             bool   `json:"enabled"`
	ID                  int    `json:"id"`
	Secured             bool   `json:"secured"`
	Email               string `json:"email"`
	Verified            bool   `json:"verified"`
	FirstName           string `json:"firstName"`
	LastName            string `json:"lastName"`
	LastSuccessfulLogin *int64 `json:"lastSuccessfulLogin"`
}

// NewUser is a user to create (POST /xapi/users).
type NewUser struct {
	Username  string `json:"username"`
	Password  string `json:"password"`
	Email     string `json:"email"`
	FirstName string `json:"firstName"`
	LastName  string `json:"lastName"`
	Enabled   bool   `json:"enabled"`
}

// ProjectRole is a project group a user can be added to.
type ProjectRole string

// Project groups. FLIP adds hub users as Members only.
const (
	RoleOwners        ProjectRole = "Owners"
	RoleMembers       ProjectRole = "Members"
	RoleCollaborators ProjectRole = "Collaborators"
)

// AliasToken is an XNAT alias token: a username/password stand-in that, on
// XNAT's update-user page, lets a new user set their own password.
type AliasToken struct {
	Alias  string `json:"alias"`
	Secret string `json:"secret"`
}

// SetupPath is the host-less "set your password" path of an alias token:
// /app/template/XDATScreen_UpdateUser.vm?a=<alias>&s=<secret>.
func (t AliasToken) SetupPath() string {
	return "/app/template/XDATScreen_UpdateUser.vm?a=" + escapeSegment(t.Alias) + "&s=" + escapeSegment(t.Secret)
}

// ListUsers lists every user profile.
func (cl *Client) ListUsers(ctx context.Context) ([]User, error) {
	var out []User
	if _, err := cl.doJSON(ctx, call{op: "list users", method: http.MethodGet, path: []string{"xapi", "users", "profiles"}}, &out); err != nil {
		return nil, err
	}
	if out == nil {
		out = []User{}
	}
	return out, nil
}

func (cl *Client) findUser(ctx context.Context, match func(User) bool, what string) (User, error) {
	us, err := cl.ListUsers(ctx)
	if err != nil {
		return User{}, err
	}
	for _, u := range us {
		if match(u) {
			return u, nil
		}
	}
	return User{}, fmt.Errorf("user by %s: %w", what, ErrNotFound)
}

// UserByUsername finds a user by username (ErrNotFound if absent).
func (cl *Client) UserByUsername(ctx context.Context, username string) (User, error) {
	return cl.findUser(ctx, func(u User) bool { return u.Username == username }, "username")
}

// UserByEmail finds a user by email, ignoring case (ErrNotFound if absent).
// The error never quotes the address.
func (cl *Client) UserByEmail(ctx context.Context, email string) (User, error) {
	return cl.findUser(ctx, func(u User) bool { return strings.EqualFold(u.Email, email) }, "email")
}

// CreateUser creates a user and returns its profile (ErrAlreadyExists when
// the username is taken).
func (cl *Client) CreateUser(ctx context.Context, u NewUser) (User, error) {
	c, err := jsonCall("create user", http.MethodPost, u, "xapi", "users")
	if err != nil {
		return User{}, err
	}
	c.ok = []int{http.StatusCreated}
	if _, err := cl.doJSON(ctx, c, nil); err != nil {
		return User{}, err
	}
	return cl.UserByUsername(ctx, u.Username)
}

// UserUpdate is the body of PUT /xapi/users/{username}.
type UserUpdate struct {
	Email   string `json:"email"`
	Enabled bool   `json:"enabled"`
}

// UpdateUser updates a user's email and enabled flag. XNAT's 304 (nothing
// changed) returns the current profile with changed false.
func (cl *Client) UpdateUser(ctx context.Context, username string, upd UserUpdate) (u User, changed bool, err error) {
	c, err := jsonCall("update user", http.MethodPut, upd, "xapi", "users", username)
	if err != nil {
		return User{}, false, err
	}
	c.ok = []int{http.StatusOK, http.StatusNotModified}
	status, err := cl.doJSON(ctx, c, &u)
	if err != nil {
		return User{}, false, err
	}
	if status == http.StatusNotModified {
		u, err = cl.UserByUsername(ctx, username)
		return u, false, err
	}
	return u, true, nil
}

// SetUserEnabledByEmail enables or disables the user with email (ErrNotFound
// if none), as the hub's update_user_profile task asks.
func (cl *Client) SetUserEnabledByEmail(ctx context.Context, email string, enabled bool) (User, error) {
	u, err := cl.UserByEmail(ctx, email)
	if err != nil {
		return User{}, err
	}
	out, _, err := cl.UpdateUser(ctx, u.Username, UserUpdate{Email: email, Enabled: enabled})
	return out, err
}

// AddUserToProject puts a user in a project group (ErrNotFound when the user
// does not exist) and returns the user.
func (cl *Client) AddUserToProject(ctx context.Context, username, project string, role ProjectRole) (User, error) {
	u, err := cl.UserByUsername(ctx, username)
	if err != nil {
		return User{}, err
	}
	if role == "" {
		role = RoleMembers
	}
	if _, err := cl.doJSON(ctx, call{op: "add user to project", method: http.MethodPut,
		path: []string{"data", "projects", project, "users", string(role), username}}, nil); err != nil {
		return User{}, err
	}
	return u, nil
}

// ProjectMember is an entry of GET /data/projects/{id}/users.
type ProjectMember struct {
	Login       string `json:"login"`
	FirstName   string `json:"firstname"`
	LastName    string `json:"lastname"`
	Email       string `json:"email"`
	DisplayName string `json:"displayname"`
	GroupID     string `json:"GROUP_ID"`
}

// ProjectMembers lists a project's users with their group (DisplayName).
func (cl *Client) ProjectMembers(ctx context.Context, project string) ([]ProjectMember, error) {
	return listing[ProjectMember](ctx, cl, call{op: "list project users", method: http.MethodGet, path: []string{"data", "projects", project, "users"}})
}

// IssueAliasToken mints an alias token for username (the service account
// issues it on the user's behalf).
func (cl *Client) IssueAliasToken(ctx context.Context, username string) (AliasToken, error) {
	var t AliasToken
	if _, err := cl.doJSON(ctx, call{op: "issue alias token", method: http.MethodGet,
		path: []string{"data", "services", "tokens", "issue", "user", username}}, &t); err != nil {
		return AliasToken{}, err
	}
	if t.Alias == "" || t.Secret == "" {
		return AliasToken{}, fmt.Errorf("xnat issue alias token: %w: no alias or secret", ErrBadResponse)
	}
	return t, nil
}

// UsernameFor derives an XNAT username from an email as FLIP does: the local
// part with every character outside [a-zA-Z0-9 -] removed, then the first of
// stem, stem1, stem2, ... not in taken.
func UsernameFor(email string, taken map[string]bool) string {
	local, _, _ := strings.Cut(email, "@")
	var b strings.Builder
	for _, r := range local {
		if r == ' ' || r == '-' || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') || ('0' <= r && r <= '9') {
			b.WriteRune(r)
		}
	}
	stem := b.String()
	name := stem
	for i := 1; taken[name]; i++ {
		name = stem + strconv.Itoa(i)
	}
	return name
}
