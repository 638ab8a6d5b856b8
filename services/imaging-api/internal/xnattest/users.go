package xnattest

import (
	"crypto/rand"
	"encoding/hex"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strconv"
)

// userProfile is the JSON of /xapi/users/profiles entries.
type userProfile struct {
	LastModified        *int64 `json:"lastModified,omitempty"`
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

func (u *user) profile() userProfile {
	return userProfile{
		LastModified: u.LastModified, Username: u.Username, Enabled: u.Enabled, ID: u.ID, Secured: true,
		Email: u.Email, Verified: u.Verified, FirstName: u.FirstName, LastName: u.LastName, LastSuccessfulLogin: u.LastLogin,
	}
}

func (s *Server) userRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /xapi/users", s.listUsernames)
	mux.HandleFunc("GET /xapi/users/profiles", s.listProfiles)
	mux.HandleFunc("GET /xapi/users/{u}", s.getUser)
	mux.HandleFunc("POST /xapi/users", s.createUser)
	mux.HandleFunc("PUT /xapi/users/{u}", s.updateUser)
	mux.HandleFunc("PUT /xapi/users/{u}/enabled/{flag}", s.setEnabled)
	mux.HandleFunc("GET /xapi/users/{u}/roles", s.listRoles)
	mux.HandleFunc("PUT /xapi/users/{u}/roles/{role}", s.setRole(true))
	mux.HandleFunc("DELETE /xapi/users/{u}/roles/{role}", s.setRole(false))
	mux.HandleFunc("GET /data/services/tokens/issue", s.issueToken(false))
	mux.HandleFunc("GET /data/services/tokens/issue/user/{u}", s.issueToken(true))
}

func (s *Server) listUsernames(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	names := slices.Sorted(maps.Keys(s.st.users))
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, names)
}

func (s *Server) listProfiles(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	out := make([]userProfile, 0, len(s.st.users))
	for _, u := range s.st.users {
		out = append(out, u.profile())
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getUser(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	u := s.st.users[r.PathValue("u")]
	var p userProfile
	if u != nil {
		p = u.profile()
	}
	s.mu.Unlock()
	if u == nil {
		textError(w, http.StatusNotFound, "User not found")
		return
	}
	writeJSON(w, http.StatusOK, p)
}

type userBody struct {
	Username  *string `json:"username"`
	Password  *string `json:"password"`
	Email     *string `json:"email"`
	FirstName *string `json:"firstName"`
	LastName  *string `json:"lastName"`
	Enabled   *bool   `json:"enabled"`
	Verified  *bool   `json:"verified"`
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func (s *Server) createUser(w http.ResponseWriter, r *http.Request) {
	if !s.requireRole(w, r, http.StatusForbidden, "Administrator") {
		return
	}
	var b userBody
	if !decodeJSON(w, r, &b) {
		return
	}
	if str(b.Username) == "" || str(b.Email) == "" {
		textError(w, http.StatusBadRequest, "username and email are required")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.st.users[*b.Username]; ok {
		textError(w, http.StatusConflict, "The username "+*b.Username+" is already in use.")
		return
	}
	u := &user{Username: *b.Username, Password: str(b.Password), Email: *b.Email, FirstName: str(b.FirstName),
		LastName: str(b.LastName), Enabled: b.Enabled == nil || *b.Enabled, Verified: b.Verified == nil || *b.Verified}
	s.st.addUser(u)
	writeJSON(w, http.StatusCreated, u.profile())
}

func (s *Server) updateUser(w http.ResponseWriter, r *http.Request) {
	if !s.requireRole(w, r, http.StatusForbidden, "Administrator") {
		return
	}
	var b userBody
	if !decodeJSON(w, r, &b) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.st.users[r.PathValue("u")]
	if u == nil {
		textError(w, http.StatusNotFound, "User not found")
		return
	}
	changed := false
	setS := func(dst *string, v *string) {
		if v != nil && *v != *dst {
			*dst, changed = *v, true
		}
	}
	setB := func(dst *bool, v *bool) {
		if v != nil && *v != *dst {
			*dst, changed = *v, true
		}
	}
	setS(&u.Email, b.Email)
	setS(&u.FirstName, b.FirstName)
	setS(&u.LastName, b.LastName)
	setB(&u.Enabled, b.Enabled)
	setB(&u.Verified, b.Verified)
	if b.Password != nil && *b.Password != u.Password {
		u.Password, changed = *b.Password, true
		s.st.revokeTokens(u.Username)
	}
	if !changed {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	ms := s.opts.Now().UnixMilli()
	u.LastModified = &ms
	writeJSON(w, http.StatusOK, u.profile())
}

func (st *state) revokeTokens(username string) {
	for k, t := range st.tokens {
		if t.Username == username {
			delete(st.tokens, k)
		}
	}
}

func (s *Server) setEnabled(w http.ResponseWriter, r *http.Request) {
	if !s.requireRole(w, r, http.StatusForbidden, "Administrator") {
		return
	}
	flag, err := strconv.ParseBool(r.PathValue("flag"))
	if err != nil {
		textError(w, http.StatusBadRequest, "enabled must be true or false")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.st.users[r.PathValue("u")]
	if u == nil {
		textError(w, http.StatusNotFound, "User not found")
		return
	}
	if u.Enabled != flag {
		u.Enabled = flag
		ms := s.opts.Now().UnixMilli()
		u.LastModified = &ms
	}
	w.WriteHeader(http.StatusOK)
}

func (s *Server) listRoles(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	u := s.st.users[r.PathValue("u")]
	var roles []string
	if u != nil {
		roles = slices.Sorted(maps.Keys(u.Roles))
	}
	s.mu.Unlock()
	if u == nil {
		textError(w, http.StatusNotFound, "User not found")
		return
	}
	if roles == nil {
		roles = []string{}
	}
	writeJSON(w, http.StatusOK, roles)
}

func (s *Server) setRole(add bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.requireRole(w, r, http.StatusForbidden, "Administrator") {
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		u := s.st.users[r.PathValue("u")]
		if u == nil {
			textError(w, http.StatusNotFound, "User not found")
			return
		}
		if add {
			u.Roles[r.PathValue("role")] = true
		} else {
			delete(u.Roles, r.PathValue("role"))
		}
		w.WriteHeader(http.StatusOK)
	}
}

// tokenJSON is an alias token as XNAT issues it.
type tokenJSON struct {
	ID                      int    `json:"id"`
	Alias                   string `json:"alias"`
	Secret                  string `json:"secret"`
	SingleUse               bool   `json:"singleUse"`
	Enabled                 bool   `json:"enabled"`
	XdatUserID              string `json:"xdatUserId"`
	EstimatedExpirationTime int64  `json:"estimatedExpirationTime"`
	Created                 int64  `json:"created"`
	Timestamp               int64  `json:"timestamp"`
}

func (s *Server) issueToken(forOther bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := callerOf(r).user.Username
		if forOther {
			if !s.requireRole(w, r, http.StatusForbidden, "Administrator") {
				return
			}
			name = r.PathValue("u")
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.st.users[name] == nil {
			textError(w, http.StatusNotFound, "User not found")
			return
		}
		now := s.opts.Now()
		s.st.nextToken++
		t := &aliasToken{ID: s.st.nextToken, Alias: randomHex(18), Secret: randomHex(32), Username: name,
			Created: now, Expires: now.Add(s.opts.TokenLifetime)}
		s.st.tokens[t.Alias] = t
		writeJSON(w, http.StatusOK, tokenJSON{
			ID: t.ID, Alias: t.Alias, Secret: t.Secret, Enabled: true, XdatUserID: name,
			EstimatedExpirationTime: t.Expires.UnixMilli(), Created: now.UnixMilli(), Timestamp: now.UnixMilli(),
		})
	}
}

func randomHex(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}
