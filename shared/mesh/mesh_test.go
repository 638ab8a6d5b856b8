package mesh

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var (
	testKey  = []byte("0123456789abcdef0123456789abcdef-mesh")
	otherKey = []byte("ffffffffffffffffffffffffffffffff-other")
)

const service = "data-access-api"

// sign builds an HS256 token with arbitrary claims.
func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
}

func claims(iss, aud string, exp time.Duration) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{"iat": now.Unix()}
	if iss != "" {
		c["iss"] = iss
	}
	if aud != "" {
		c["aud"] = aud
	}
	if exp != 0 {
		c["exp"] = now.Add(exp).Unix()
	}
	return c
}

// confused signs a token whose header claims alg but whose signature is an
// HMAC-SHA256 with the shared key (algorithm confusion).
func confused(t *testing.T, alg string, c jwt.MapClaims) string {
	t.Helper()
	enc := base64.RawURLEncoding
	h, _ := json.Marshal(map[string]string{"alg": alg, "typ": "JWT"})
	p, _ := json.Marshal(c)
	unsigned := enc.EncodeToString(h) + "." + enc.EncodeToString(p)
	mac := hmac.New(sha256.New, testKey)
	mac.Write([]byte(unsigned))
	return unsigned + "." + enc.EncodeToString(mac.Sum(nil))
}

type reply struct {
	status int
	detail string
	caller string
}

func call(t *testing.T, v *Verifier, callers []string, headers map[string]string) reply {
	t.Helper()
	h := v.Require(callers...)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ok := CallerFrom(r.Context())
		if !ok {
			t.Error("handler reached without a caller in context")
		}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(c))
	}))
	req := httptest.NewRequest(http.MethodGet, "/cohort/query", nil)
	for k, val := range headers {
		req.Header.Set(k, val)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	out := reply{status: rec.Code}
	if rec.Code == http.StatusOK {
		out.caller = rec.Body.String()
		return out
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("content type %q, want application/json", ct)
	}
	var body struct {
		Detail string `json:"detail"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("error body %q is not JSON: %v", rec.Body.String(), err)
	}
	out.detail = body.Detail
	return out
}

func TestVerifierRequire(t *testing.T) {
	t.Parallel()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	good := func(iss string) string {
		return sign(t, jwt.SigningMethodHS256, testKey, claims(iss, service, 30*time.Second))
	}
	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
	noneTok := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims("trust-api", service, 30*time.Second))

	const (
		notConfigured = "Trust-internal service auth not configured."
		missing       = "Not authenticated: trust-internal service key is missing."
		invalid       = "Invalid trust-internal service key."
	)
	admitted := []string{"trust-api", CallerRawKey}
	tests := []struct {
		name       string
		key        []byte
		callers    []string
		headers    map[string]string
		wantStatus int
		wantDetail string
		wantCaller string
	}{
		{"no header", testKey, admitted, nil, 401, missing, ""},
		{"raw good", testKey, admitted, map[string]string{HeaderInternalKey: string(testKey)}, 200, "", CallerRawKey},
		{"raw header name is case-insensitive", testKey, admitted, map[string]string{"x-trust-internal-service-key": string(testKey)}, 200, "", CallerRawKey},
		{"raw bad", testKey, admitted, map[string]string{HeaderInternalKey: string(otherKey)}, 401, invalid, ""},
		{"raw prefix of key", testKey, admitted, map[string]string{HeaderInternalKey: string(testKey[:MinKeyBytes])}, 401, invalid, ""},
		{"raw good but raw caller not admitted", testKey, []string{"trust-api"}, map[string]string{HeaderInternalKey: string(testKey)}, 403, "caller flip-internal-key is not allowed on this route", ""},
		{"raw with key unset", nil, admitted, map[string]string{HeaderInternalKey: ""}, 401, notConfigured, ""},
		{"raw with key unset and empty header sent", []byte{}, admitted, map[string]string{HeaderInternalKey: "x"}, 401, notConfigured, ""},
		{"raw with short key", testKey[:MinKeyBytes-1], admitted, map[string]string{HeaderInternalKey: string(testKey[:MinKeyBytes-1])}, 401, notConfigured, ""},
		{"jwt with short key", testKey[:MinKeyBytes-1], admitted, bearer(sign(t, jwt.SigningMethodHS256, testKey[:MinKeyBytes-1], claims("trust-api", service, 30*time.Second))), 401, notConfigured, ""},
		{"no header with key unset", nil, admitted, nil, 401, notConfigured, ""},
		{"jwt good", testKey, admitted, bearer(good("trust-api")), 200, "", "trust-api"},
		{"jwt good lowercase bearer", testKey, admitted, map[string]string{"Authorization": "bearer " + good("trust-api")}, 200, "", "trust-api"},
		{"jwt good any caller when no allowlist", testKey, nil, bearer(good("imaging-api")), 200, "", "imaging-api"},
		{"jwt exactly 60s ahead", testKey, admitted, bearer(sign(t, jwt.SigningMethodHS256, testKey, claims("trust-api", service, MaxTokenTTL))), 200, "", "trust-api"},
		{"alg none", testKey, admitted, bearer(noneTok), 401, invalid, ""},
		{"alg HS512 with the right key", testKey, admitted, bearer(sign(t, jwt.SigningMethodHS512, testKey, claims("trust-api", service, 30*time.Second))), 401, invalid, ""},
		{"alg HS384 with the right key", testKey, admitted, bearer(sign(t, jwt.SigningMethodHS384, testKey, claims("trust-api", service, 30*time.Second))), 401, invalid, ""},
		{"alg RS256 real signature", testKey, admitted, bearer(sign(t, jwt.SigningMethodRS256, rsaKey, claims("trust-api", service, 30*time.Second))), 401, invalid, ""},
		{"alg RS256 header with HMAC signature", testKey, admitted, bearer(confused(t, "RS256", claims("trust-api", service, 30*time.Second))), 401, invalid, ""},
		{"alg header lowercase hs256", testKey, admitted, bearer(confused(t, "hs256", claims("trust-api", service, 30*time.Second))), 401, invalid, ""},
		{"control: hand-built HS256 accepted", testKey, admitted, bearer(confused(t, "HS256", claims("trust-api", service, 30*time.Second))), 200, "", "trust-api"},
		{"wrong aud", testKey, admitted, bearer(sign(t, jwt.SigningMethodHS256, testKey, claims("trust-api", "imaging-api", 30*time.Second))), 401, invalid, ""},
		{"missing aud", testKey, admitted, bearer(sign(t, jwt.SigningMethodHS256, testKey, claims("trust-api", "", 30*time.Second))), 401, invalid, ""},
		{"missing iss", testKey, admitted, bearer(sign(t, jwt.SigningMethodHS256, testKey, claims("", service, 30*time.Second))), 401, invalid, ""},
		{"caller not allowed", testKey, admitted, bearer(good("fl-client")), 403, "caller fl-client is not allowed on this route", ""},
		{"missing exp", testKey, admitted, bearer(sign(t, jwt.SigningMethodHS256, testKey, claims("trust-api", service, 0))), 401, invalid, ""},
		{"exp too far ahead", testKey, admitted, bearer(sign(t, jwt.SigningMethodHS256, testKey, claims("trust-api", service, 2*time.Minute))), 401, invalid, ""},
		{"exp a day ahead", testKey, admitted, bearer(sign(t, jwt.SigningMethodHS256, testKey, claims("trust-api", service, 24*time.Hour))), 401, invalid, ""},
		{"expired", testKey, admitted, bearer(sign(t, jwt.SigningMethodHS256, testKey, claims("trust-api", service, -time.Minute))), 401, invalid, ""},
		{"wrong key", testKey, admitted, bearer(sign(t, jwt.SigningMethodHS256, otherKey, claims("trust-api", service, 30*time.Second))), 401, invalid, ""},
		{"bearer garbage", testKey, admitted, bearer("not-a-jwt"), 401, invalid, ""},
		{"bearer empty", testKey, admitted, map[string]string{"Authorization": "Bearer "}, 401, invalid, ""},
		{"basic auth", testKey, admitted, map[string]string{"Authorization": "Basic dXNlcjpwYXNz"}, 401, invalid, ""},
		{"raw key in authorization without bearer", testKey, admitted, map[string]string{"Authorization": string(testKey)}, 401, invalid, ""},
		{"bad raw header wins over good jwt", testKey, admitted, map[string]string{HeaderInternalKey: "wrong", "Authorization": "Bearer " + good("trust-api")}, 401, invalid, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := NewVerifier(service, tc.key, "", nil)
			got := call(t, v, tc.callers, tc.headers)
			if got.status != tc.wantStatus {
				t.Fatalf("status %d (detail %q), want %d", got.status, got.detail, tc.wantStatus)
			}
			if tc.wantStatus == 401 && got.detail == "" {
				t.Fatal("401 without detail")
			}
			if tc.wantDetail != "" && got.detail != tc.wantDetail {
				t.Errorf("detail %q, want %q", got.detail, tc.wantDetail)
			}
			if got.caller != tc.wantCaller {
				t.Errorf("caller %q, want %q", got.caller, tc.wantCaller)
			}
		})
	}
}

func TestVerifierCustomHeader(t *testing.T) {
	t.Parallel()
	v := NewVerifier(service, testKey, "X-Internal", nil)
	if got := call(t, v, nil, map[string]string{"X-Internal": string(testKey)}); got.status != 200 || got.caller != CallerRawKey {
		t.Fatalf("custom header: %+v", got)
	}
	if got := call(t, v, nil, map[string]string{HeaderInternalKey: string(testKey)}); got.status != 401 {
		t.Fatalf("default header must not be read when a custom one is set: %+v", got)
	}

	// The raw key may travel in Authorization itself; bearer tokens still work there.
	va := NewVerifier(service, testKey, "Authorization", nil)
	if got := call(t, va, nil, map[string]string{"Authorization": string(testKey)}); got.status != 200 || got.caller != CallerRawKey {
		t.Fatalf("raw key in Authorization: %+v", got)
	}
	tok, err := NewSigner("trust-api", testKey).Token(service)
	if err != nil {
		t.Fatal(err)
	}
	if got := call(t, va, nil, map[string]string{"Authorization": "Bearer " + tok}); got.status != 200 || got.caller != "trust-api" {
		t.Fatalf("bearer in Authorization-header mode: %+v", got)
	}
	if got := call(t, va, nil, map[string]string{"Authorization": "wrong"}); got.status != 401 {
		t.Fatalf("wrong raw key in Authorization: %+v", got)
	}
}

func TestVerifierConfigured(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		key  []byte
		want bool
	}{{nil, false}, {testKey[:MinKeyBytes-1], false}, {testKey[:MinKeyBytes], true}, {testKey, true}} {
		if got := NewVerifier(service, tc.key, "", nil).Configured(); got != tc.want {
			t.Errorf("len %d: Configured() = %v, want %v", len(tc.key), got, tc.want)
		}
	}
}

func TestVerifierCopiesKey(t *testing.T) {
	t.Parallel()
	key := []byte(string(testKey))
	v := NewVerifier(service, key, "", nil)
	key[0] ^= 0xff
	if got := call(t, v, nil, map[string]string{HeaderInternalKey: string(testKey)}); got.status != 200 {
		t.Fatalf("verifier must keep its own copy of the key: %+v", got)
	}
}

func TestSignerToken(t *testing.T) {
	t.Parallel()
	s := NewSigner("trust-api", testKey)
	before := time.Now()
	tok, err := s.Token(service)
	if err != nil {
		t.Fatal(err)
	}
	c := jwt.RegisteredClaims{}
	parsed, err := jwt.ParseWithClaims(tok, &c, func(*jwt.Token) (any, error) { return testKey, nil },
		jwt.WithValidMethods([]string{"HS256"}))
	if err != nil {
		t.Fatalf("token does not verify: %v", err)
	}
	if parsed.Method.Alg() != "HS256" {
		t.Errorf("alg %s", parsed.Method.Alg())
	}
	if c.Issuer != "trust-api" || len(c.Audience) != 1 || c.Audience[0] != service {
		t.Errorf("claims iss=%q aud=%v", c.Issuer, c.Audience)
	}
	if c.IssuedAt == nil || c.ExpiresAt == nil {
		t.Fatalf("iat/exp missing: %+v", c)
	}
	ttl := c.ExpiresAt.Sub(before.Truncate(time.Second))
	if ttl < TokenTTL-time.Second || ttl > TokenTTL+time.Second {
		t.Errorf("ttl %v, want about %v", ttl, TokenTTL)
	}
	if _, err := NewSigner("trust-api", testKey[:10]).Token(service); !errors.Is(err, ErrKeyTooShort) {
		t.Errorf("short key: err %v, want ErrKeyTooShort", err)
	}
}

func TestSignerApplyRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		signKey    []byte
		mode       AuthMode
		keyHeader  string
		verifyHdr  string
		audience   string
		wantStatus int
		wantCaller string
		wantErr    error
	}{
		{"jwt", testKey, ModeJWT, "", "", service, 200, "trust-api", nil},
		{"jwt other audience", testKey, ModeJWT, "", "", "imaging-api", 401, "", nil},
		{"key default header", testKey, ModeKey, "", "", service, 200, CallerRawKey, nil},
		{"key custom header", testKey, ModeKey, "X-Custom", "X-Custom", service, 200, CallerRawKey, nil},
		{"jwt wrong key", otherKey, ModeJWT, "", "", service, 401, "", nil},
		{"key short", testKey[:4], ModeKey, "", "", service, 0, "", ErrKeyTooShort},
		{"jwt short", testKey[:4], ModeJWT, "", "", service, 0, "", ErrKeyTooShort},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := httptest.NewRequest(http.MethodGet, "/x", nil)
			err := NewSigner("trust-api", tc.signKey).Apply(req, tc.audience, tc.mode, tc.keyHeader)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
				if req.Header.Get("Authorization") != "" || req.Header.Get(HeaderInternalKey) != "" {
					t.Fatal("headers set despite error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			v := NewVerifier(service, testKey, tc.verifyHdr, nil)
			rec := httptest.NewRecorder()
			var caller string
			v.Require()(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				caller, _ = CallerFrom(r.Context())
			})).ServeHTTP(rec, req)
			if rec.Code != tc.wantStatus || caller != tc.wantCaller {
				t.Fatalf("status %d caller %q, want %d %q", rec.Code, caller, tc.wantStatus, tc.wantCaller)
			}
		})
	}
	if err := NewSigner("x", testKey).Apply(httptest.NewRequest("GET", "/", nil), service, AuthMode("basic"), ""); err == nil {
		t.Error("unknown mode accepted")
	}
}

func TestParseAuthMode(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]AuthMode{"": ModeJWT, "jwt": ModeJWT, "JWT": ModeJWT, " key ": ModeKey} {
		got, err := ParseAuthMode(in)
		if err != nil || got != want {
			t.Errorf("ParseAuthMode(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseAuthMode("basic"); err == nil {
		t.Error("basic accepted")
	}
}

func TestCallerFromEmpty(t *testing.T) {
	t.Parallel()
	if _, ok := CallerFrom(httptest.NewRequest("GET", "/", nil).Context()); ok {
		t.Error("caller found in a bare context")
	}
	if c, ok := CallerFrom(WithCaller(t.Context(), "x")); !ok || c != "x" {
		t.Errorf("WithCaller round trip: %q %v", c, ok)
	}
}

func TestRefusalLogDoesNotLeakCredentials(t *testing.T) {
	t.Parallel()
	var buf strings.Builder
	logger := newTestLogger(&buf)
	v := NewVerifier(service, testKey, "", logger)
	tok := sign(t, jwt.SigningMethodHS256, otherKey, claims("trust-api", service, 30*time.Second))
	call(t, v, nil, map[string]string{"Authorization": "Bearer " + tok})
	call(t, v, nil, map[string]string{HeaderInternalKey: "guess-" + string(otherKey)})
	out := buf.String()
	if !strings.Contains(out, "mesh request refused") {
		t.Fatalf("refusals not logged: %s", out)
	}
	for _, secret := range []string{tok, string(otherKey), string(testKey)} {
		if strings.Contains(out, secret) {
			t.Fatalf("log contains a credential: %s", out)
		}
	}
}
