// Package mesh authenticates calls between the services of one trust node.
//
// A called service wraps its routes with a Verifier; a calling service signs its
// requests with a Signer. Both share TRUST_INTERNAL_SERVICE_KEY. Two credentials
// are accepted:
//
//   - FLIP's raw header (X-Trust-Internal-Service-Key by default) carrying the key
//     itself, compared in constant time. Such callers are named CallerRawKey.
//   - "Authorization: Bearer <JWT>", HS256 only, signed with the key, with iss set
//     to the calling service, aud set to the called service and a required exp no
//     more than MaxTokenTTL ahead. The caller is the iss claim.
//
// Every route names the callers it admits. An unset key, or one shorter than
// MinKeyBytes, refuses every request (fail closed).
package mesh

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	// HeaderInternalKey is FLIP's header carrying the raw internal service key.
	HeaderInternalKey = "X-Trust-Internal-Service-Key"
	// HeaderCohortAdmin is FLIP's header carrying the cohort-admin proof.
	HeaderCohortAdmin = "X-Cohort-Admin-Key"
	// MinKeyBytes is the shortest internal service key that is accepted.
	MinKeyBytes = 32
	// CallerRawKey is the caller name given to requests authenticated by the raw FLIP header.
	CallerRawKey = "flip-internal-key"

	// MaxTokenTTL is how far ahead of the verifier's clock a token's exp may lie.
	MaxTokenTTL = 60 * time.Second
	// TokenTTL is the lifetime of the tokens a Signer issues.
	TokenTTL = 30 * time.Second
	// ClockSkew is the tolerance applied to exp, nbf and iat and to the MaxTokenTTL bound.
	ClockSkew = 5 * time.Second
)

// FLIP's response texts.
const (
	detailNotConfigured = "Trust-internal service auth not configured."
	detailMissing       = "Not authenticated: trust-internal service key is missing."
	detailInvalid       = "Invalid trust-internal service key."
)

// ErrKeyTooShort is returned by a Signer whose key is unset or shorter than MinKeyBytes.
var ErrKeyTooShort = fmt.Errorf("internal service key must be at least %d bytes", MinKeyBytes)

// KeyUsable reports whether key is long enough to authenticate mesh calls.
func KeyUsable(key []byte) bool { return len(key) >= MinKeyBytes }

type callerKey struct{}

// CallerFrom returns the authenticated caller stored by Verifier.Require.
func CallerFrom(ctx context.Context) (string, bool) {
	c, ok := ctx.Value(callerKey{}).(string)
	return c, ok && c != ""
}

// WithCaller returns a context carrying caller, as Verifier.Require does. It
// lets handler tests run without a signed request.
func WithCaller(ctx context.Context, caller string) context.Context {
	return context.WithValue(ctx, callerKey{}, caller)
}

// Verifier checks mesh credentials on incoming requests. It is immutable after
// construction and safe for concurrent use.
type Verifier struct {
	service string
	key     []byte
	header  string
	logger  *slog.Logger
	now     func() time.Time
}

// NewVerifier returns a Verifier for the service named service (the expected
// aud). keyHeader names the raw-key header; "" means HeaderInternalKey. A nil
// logger discards. An unset or short key is logged at error level here, and
// every request is then refused with 401.
func NewVerifier(service string, key []byte, keyHeader string, logger *slog.Logger) *Verifier {
	if keyHeader == "" {
		keyHeader = HeaderInternalKey
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	v := &Verifier{
		service: service,
		key:     slices.Clone(key),
		header:  http.CanonicalHeaderKey(keyHeader),
		logger:  logger,
		now:     time.Now,
	}
	if !v.Configured() {
		logger.Error("internal service auth not configured: every mesh request will be refused",
			"service", service, "min_bytes", MinKeyBytes, "key_len", len(key))
	}
	return v
}

// Configured reports whether the key is usable; when false every request is refused.
func (v *Verifier) Configured() bool { return KeyUsable(v.key) }

// Require returns middleware admitting only authenticated requests whose caller
// is one of callers. With no callers, any authenticated caller is admitted.
// Failures answer 401 (no, bad or unusable credentials) or 403 (caller not
// admitted) with a JSON body {"detail": ...}.
func (v *Verifier) Require(callers ...string) func(http.Handler) http.Handler {
	allowed := slices.Clone(callers)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			caller, status, detail, reason := v.authenticate(r)
			if status == 0 && len(allowed) > 0 && !slices.Contains(allowed, caller) {
				status, detail, reason = http.StatusForbidden,
					fmt.Sprintf("caller %s is not allowed on this route", caller), "caller not allowed"
			}
			if status != 0 {
				v.logger.Warn("mesh request refused",
					"service", v.service, "method", r.Method, "path", r.URL.Path,
					"status", status, "reason", reason, "caller", caller)
				writeDetail(w, status, detail)
				return
			}
			next.ServeHTTP(w, r.WithContext(WithCaller(r.Context(), caller)))
		})
	}
}

// authenticate returns the caller, or a non-zero status with the FLIP detail
// text and a log-safe reason.
func (v *Verifier) authenticate(r *http.Request) (caller string, status int, detail, reason string) {
	if !v.Configured() {
		return "", http.StatusUnauthorized, detailNotConfigured, "key not configured"
	}
	rawIsAuthorization := v.header == "Authorization"
	if !rawIsAuthorization {
		if raw := r.Header.Get(v.header); raw != "" {
			return v.checkRaw(raw)
		}
	}
	authz := r.Header.Get("Authorization")
	if authz == "" {
		return "", http.StatusUnauthorized, detailMissing, "no credentials"
	}
	if token, ok := bearerToken(authz); ok {
		caller, err := v.checkToken(token)
		if err != nil {
			return caller, http.StatusUnauthorized, detailInvalid, err.Error()
		}
		return caller, 0, "", ""
	}
	if rawIsAuthorization {
		return v.checkRaw(authz)
	}
	return "", http.StatusUnauthorized, detailInvalid, "authorization is not a bearer token"
}

func (v *Verifier) checkRaw(raw string) (string, int, string, string) {
	if subtle.ConstantTimeCompare([]byte(raw), v.key) != 1 {
		return "", http.StatusUnauthorized, detailInvalid, "raw key mismatch"
	}
	return CallerRawKey, 0, "", ""
}

func bearerToken(h string) (string, bool) {
	const prefix = "bearer "
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return "", false
	}
	return strings.TrimSpace(h[len(prefix):]), true
}

var (
	errNoIssuer   = errors.New("token has no iss")
	errTooLongTTL = errors.New("token exp is too far ahead")
)

func (v *Verifier) checkToken(token string) (string, error) {
	claims := &jwt.RegisteredClaims{}
	_, err := jwt.ParseWithClaims(token, claims,
		func(*jwt.Token) (any, error) { return v.key, nil },
		jwt.WithValidMethods([]string{"HS256"}),
		jwt.WithAudience(v.service),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(ClockSkew),
		jwt.WithTimeFunc(v.now),
	)
	if err != nil {
		return "", fmt.Errorf("verify token: %w", err)
	}
	if claims.Issuer == "" {
		return "", errNoIssuer
	}
	if claims.ExpiresAt.After(v.now().Add(MaxTokenTTL + ClockSkew)) {
		return claims.Issuer, errTooLongTTL
	}
	return claims.Issuer, nil
}

func writeDetail(w http.ResponseWriter, status int, detail string) {
	body, _ := json.Marshal(map[string]string{"detail": detail})
	w.Header().Set("Content-Type", "application/json")
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", "Bearer")
	}
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// Signer produces credentials for outgoing mesh calls. It is immutable after
// construction and safe for concurrent use.
type Signer struct {
	issuer string
	key    []byte
	now    func() time.Time
}

// NewSigner returns a Signer that names itself issuer.
func NewSigner(issuer string, key []byte) *Signer {
	return &Signer{issuer: issuer, key: slices.Clone(key), now: time.Now}
}

// Token returns an HS256 JWT for audience, valid for TokenTTL. It fails with
// ErrKeyTooShort when the key is unusable.
func (s *Signer) Token(audience string) (string, error) {
	if !KeyUsable(s.key) {
		return "", ErrKeyTooShort
	}
	now := s.now()
	claims := jwt.RegisteredClaims{
		Issuer:    s.issuer,
		Audience:  jwt.ClaimStrings{audience},
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(TokenTTL)),
	}
	signed, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(s.key)
	if err != nil {
		return "", fmt.Errorf("sign mesh token: %w", err)
	}
	return signed, nil
}

// AuthMode selects how a Signer authenticates a request.
type AuthMode string

const (
	// ModeJWT sends "Authorization: Bearer <JWT>" (our services).
	ModeJWT AuthMode = "jwt"
	// ModeKey sends the raw key in the FLIP header (FLIP's Python services).
	ModeKey AuthMode = "key"
)

// ParseAuthMode maps "", "jwt" and "key" (any case) to an AuthMode.
func ParseAuthMode(s string) (AuthMode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", string(ModeJWT):
		return ModeJWT, nil
	case string(ModeKey):
		return ModeKey, nil
	}
	return "", fmt.Errorf("unknown internal auth mode %q (want %q or %q)", s, ModeJWT, ModeKey)
}

// Apply authenticates req for audience. In ModeKey the raw key is set in
// keyHeader ("" means HeaderInternalKey). It fails with ErrKeyTooShort when the
// key is unusable and on an unknown mode.
func (s *Signer) Apply(req *http.Request, audience string, mode AuthMode, keyHeader string) error {
	switch mode {
	case ModeJWT:
		token, err := s.Token(audience)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		return nil
	case ModeKey:
		if !KeyUsable(s.key) {
			return ErrKeyTooShort
		}
		if keyHeader == "" {
			keyHeader = HeaderInternalKey
		}
		req.Header.Set(keyHeader, string(s.key))
		return nil
	}
	return fmt.Errorf("unknown internal auth mode %q", mode)
}
