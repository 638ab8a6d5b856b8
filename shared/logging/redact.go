package logging

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"regexp"
	"strings"
	"unicode"
)

// Redacted replaces the value of an attribute whose key names a secret or a
// personal identifier.
const Redacted = "[REDACTED]"

// QueryHash is FLIP's query fingerprint: the text stripped, lowercased, each
// whitespace run collapsed to one space, then the first 12 hex digits of its
// SHA-256. SQL is logged only as this hash.
func QueryHash(sql string) string {
	norm := strings.Join(strings.Fields(strings.ToLower(sql)), " ")
	sum := sha256.Sum256([]byte(norm))
	return hex.EncodeToString(sum[:])[:12]
}

// sensitiveFragments mark a key as secret wherever they appear in its
// lowercased, separator-free form ("X-Api-Key" -> "xapikey").
var sensitiveFragments = []string{
	"password", "passwd", "passphrase", "secret", "token", "apikey", "authorization",
	"cookie", "credential", "email", "bearer", "privatekey", "signature", "nhsnumber",
}

// sensitiveWords mark a key as secret when they are one of its words
// ("aes_key", "keyBase64", "mrn"), but not as part of a longer word ("monkey").
var sensitiveWords = map[string]bool{
	"key": true, "keys": true, "auth": true, "jwt": true, "pwd": true, "pass": true,
	"session": true, "sig": true, "mail": true, "patient": true, "mrn": true,
	"nhs": true, "dob": true, "postcode": true,
}

// harmlessLastWords exempt keys that describe a secret without holding it
// ("key_fingerprint", "api_key_header", "token_count").
var harmlessLastWords = map[string]bool{
	"fingerprint": true, "fp": true, "header": true, "configured": true, "set": true,
	"present": true, "count": true, "len": true, "length": true, "mode": true, "ttl": true,
}

// keyWords splits a key into lowercase words at separators and camelCase
// boundaries: "trustAPIKey_file" -> [trust api key file].
func keyWords(key string) []string {
	var words []string
	var cur []rune
	runes := []rune(key)
	flush := func() {
		if len(cur) > 0 {
			words = append(words, strings.ToLower(string(cur)))
			cur = cur[:0]
		}
	}
	for i, r := range runes {
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) {
			flush()
			continue
		}
		if unicode.IsUpper(r) && len(cur) > 0 {
			prevLower := unicode.IsLower(runes[i-1]) || unicode.IsDigit(runes[i-1])
			nextLower := i+1 < len(runes) && unicode.IsLower(runes[i+1])
			if prevLower || (unicode.IsUpper(runes[i-1]) && nextLower) {
				flush()
			}
		}
		cur = append(cur, r)
	}
	flush()
	return words
}

// keyClass says how an attribute's value must be treated.
type keyClass int

const (
	classPlain keyClass = iota
	classSecret
	classSQL
)

func classify(key string) keyClass {
	words := keyWords(key)
	if len(words) == 0 {
		return classPlain
	}
	last := words[len(words)-1]
	for _, w := range words {
		if w == "sql" {
			return classSQL
		}
	}
	if last == "query" || last == "statement" {
		return classSQL
	}
	if harmlessLastWords[last] {
		return classPlain
	}
	for _, w := range words {
		if sensitiveWords[w] {
			return classSecret
		}
	}
	joined := strings.Join(words, "")
	for _, f := range sensitiveFragments {
		if strings.Contains(joined, f) {
			return classSecret
		}
	}
	return classPlain
}

// SensitiveKey reports whether an attribute named key is redacted (secret or
// personal data) or hashed (SQL) by the redacting handler.
func SensitiveKey(key string) bool { return classify(key) != classPlain }

var (
	reURLUserinfo = regexp.MustCompile(`(?i)([a-z][a-z0-9+.\-]*://)[^/\s@:]+(:[^/\s@]*)?@`)
	reEmail       = regexp.MustCompile(`[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}`)
	reAuthScheme  = regexp.MustCompile(`(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]+=*`)
	reJWT         = regexp.MustCompile(`eyJ[A-Za-z0-9_\-]+\.eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*`)
	reAssignment  = regexp.MustCompile(`(?i)\b(password|passwd|pwd|secret|token|api[_\-]?key|access[_\-]?key|private[_\-]?key|authorization)(["']?\s*[=:]\s*["']?)([^\s&,;"'}]+)`)
)

// MaskString masks credentials and personal data inside free text: email
// addresses, "Bearer"/"Basic" credentials, JWTs, URL userinfo and
// "password=..."-style assignments.
func MaskString(s string) string {
	if !mayNeedMask(s) {
		return s
	}
	s = reURLUserinfo.ReplaceAllString(s, "${1}"+Redacted+"@")
	s = reJWT.ReplaceAllString(s, Redacted)
	s = reAuthScheme.ReplaceAllString(s, "${1} "+Redacted)
	s = reAssignment.ReplaceAllStringFunc(s, maskAssignment)
	s = reEmail.ReplaceAllString(s, Redacted)
	return s
}

// maskAssignment masks the value of one "name=value" match, leaving an
// authorization scheme word (already followed by its masked credential) alone.
func maskAssignment(m string) string {
	sub := reAssignment.FindStringSubmatch(m)
	if sub == nil {
		return m
	}
	switch strings.ToLower(sub[3]) {
	case "bearer", "basic", strings.ToLower(Redacted):
		return m
	}
	return sub[1] + sub[2] + Redacted
}

// mayNeedMask is a cheap pre-check: every pattern needs one of these.
func mayNeedMask(s string) bool {
	if strings.ContainsAny(s, "@=:") || strings.Contains(s, "eyJ") {
		return true
	}
	l := strings.ToLower(s)
	return strings.Contains(l, "bearer") || strings.Contains(l, "basic")
}

// redactHandler rewrites every attribute and the message before passing the
// record on; it holds no state of its own and is safe for concurrent use.
type redactHandler struct {
	inner slog.Handler
}

// NewRedactingHandler wraps inner so that secrets, personal data and SQL text
// never reach it (see package doc).
func NewRedactingHandler(inner slog.Handler) slog.Handler {
	return &redactHandler{inner: inner}
}

func (h *redactHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *redactHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, MaskString(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(a))
		return true
	})
	return h.inner.Handle(ctx, out)
}

func (h *redactHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		clean[i] = redactAttr(a)
	}
	return &redactHandler{inner: h.inner.WithAttrs(clean)}
}

func (h *redactHandler) WithGroup(name string) slog.Handler {
	return &redactHandler{inner: h.inner.WithGroup(name)}
}

func redactAttr(a slog.Attr) slog.Attr {
	a.Value = a.Value.Resolve()
	if a.Value.Kind() == slog.KindGroup {
		attrs := a.Value.Group()
		clean := make([]slog.Attr, len(attrs))
		for i, ga := range attrs {
			clean[i] = redactAttr(ga)
		}
		if classify(a.Key) == classSecret {
			return slog.String(a.Key, Redacted)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(clean...)}
	}
	switch classify(a.Key) {
	case classSQL:
		if a.Value.Kind() == slog.KindString {
			return slog.String(a.Key, QueryHash(a.Value.String()))
		}
		return slog.String(a.Key, Redacted)
	case classSecret:
		return slog.String(a.Key, Redacted)
	}
	switch a.Value.Kind() {
	case slog.KindString:
		return slog.String(a.Key, MaskString(a.Value.String()))
	case slog.KindAny:
		return slog.Any(a.Key, redactAny(a.Value.Any()))
	}
	return a
}

// redactAny cleans an arbitrary value by walking its JSON form, so that
// secret fields of structs and maps are caught as well.
func redactAny(v any) any {
	switch x := v.(type) {
	case nil:
		return nil
	case error:
		return MaskString(x.Error())
	case []byte:
		return Redacted
	}
	b, err := json.Marshal(v)
	if err != nil {
		return MaskString(strings.TrimSpace(stringOf(v)))
	}
	var generic any
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	if err := dec.Decode(&generic); err != nil {
		return Redacted
	}
	return redactJSON(generic)
}

func stringOf(v any) string {
	if s, ok := v.(interface{ String() string }); ok {
		return s.String()
	}
	return Redacted
}

func redactJSON(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			switch classify(k) {
			case classSQL:
				if s, ok := val.(string); ok {
					x[k] = QueryHash(s)
				} else {
					x[k] = Redacted
				}
			case classSecret:
				x[k] = Redacted
			default:
				x[k] = redactJSON(val)
			}
		}
		return x
	case []any:
		for i := range x {
			x[i] = redactJSON(x[i])
		}
		return x
	case string:
		return MaskString(x)
	}
	return v
}
