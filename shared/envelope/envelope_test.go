package envelope

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

const (
	katEnvelope  = "eyJ2IjogMSwgImtpZCI6ICJzaGFyZWQiLCAiaXYiOiAiQUFFQ0F3UUZCZ2NJQ1FvTCIsICJjdCI6ICJMR3k1Ykt2SW8zWCtOdkw1MFo3MFNwSTgzd1NLbGlyaUxJa25PQT09In0="
	taskEnvelope = "eyJ2IjogMSwgImtpZCI6ICJzaGFyZWQiLCAiaXYiOiAiQUFFQ0F3UUZCZ2NJQ1FvTCIsICJjdCI6ICJQQ0NuYnFDWHUwVGtKYld4a2NzSlhLR3JJZGlHcWU1MEpVYkNneE9zclZOSlpBPT0ifQ=="
)

func katKey() []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = byte(i)
	}
	return k
}

func katNonce() []byte {
	n := make([]byte, 12)
	for i := range n {
		n[i] = byte(i)
	}
	return n
}

func mustCipher(t testing.TB, key []byte) *Cipher {
	t.Helper()
	c, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestKnownAnswerVectors(t *testing.T) {
	t.Parallel()
	c := mustCipher(t, katKey())
	cases := []struct {
		name, envelope, context, plaintext string
	}{
		{"kat", katEnvelope, "kat", "known-answer"},
		{"task vector", taskEnvelope, TaskContext("cohort_query"), `{"query_id": "q1"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := c.Open(tc.envelope, tc.context)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			if string(got) != tc.plaintext {
				t.Fatalf("plaintext = %q, want %q", got, tc.plaintext)
			}
			// Sealing with the vector's nonce reproduces it byte for byte.
			if again := c.sealWithNonce([]byte(tc.plaintext), tc.context, katNonce()); again != tc.envelope {
				t.Fatalf("reseal = %s\nwant     %s", again, tc.envelope)
			}
		})
	}
}

func TestKATContextMustMatchExactly(t *testing.T) {
	t.Parallel()
	c := mustCipher(t, katKey())
	for _, ctx := range []string{"", "kat ", "KAT", "task:kat"} {
		if _, err := c.Open(katEnvelope, ctx); !errors.Is(err, ErrAuthentication) {
			t.Errorf("context %q: err = %v, want failed authentication", ctx, err)
		}
	}
}

func TestFingerprint(t *testing.T) {
	t.Parallel()
	if got := Fingerprint(katKey()); got != "630dcd2966c4" {
		t.Fatalf("KAT key fingerprint = %s, want 630dcd2966c4", got)
	}
	if got := mustCipher(t, katKey()).Fingerprint(); got != "630dcd2966c4" {
		t.Fatalf("cipher fingerprint = %s", got)
	}
}

func TestTaskContext(t *testing.T) {
	t.Parallel()
	if got := TaskContext("cohort_query"); got != "task:cohort_query" {
		t.Fatalf("TaskContext = %q", got)
	}
}

func TestRoundTripAndFreshNonce(t *testing.T) {
	t.Parallel()
	c := mustCipher(t, katKey())
	for _, pt := range []string{"", "héllo wörld ✓ 日本", strings.Repeat("x", 10_000)} {
		a, err := c.Seal([]byte(pt), "ctx")
		if err != nil {
			t.Fatal(err)
		}
		b, err := c.Seal([]byte(pt), "ctx")
		if err != nil {
			t.Fatal(err)
		}
		if a == b {
			t.Fatal("two seals of the same plaintext are identical: nonce reused")
		}
		got, err := c.Open(a, "ctx")
		if err != nil || string(got) != pt {
			t.Fatalf("round trip: %q, %v", got, err)
		}
	}
}

// rewrite builds an envelope from raw JSON text.
func rewrite(json string) string { return base64.StdEncoding.EncodeToString([]byte(json)) }

func TestDecodeMatrix(t *testing.T) {
	t.Parallel()
	c := mustCipher(t, katKey())
	decoded, _ := base64.StdEncoding.DecodeString(katEnvelope)
	kat := string(decoded)
	const iv, ct = "AAECAwQFBgcICQoL", "LGy5bKvIo3X+NvL50Z70SpI83wSKliriLIknOA=="
	flip := func(b64 string, bit int) string {
		raw, _ := base64.StdEncoding.DecodeString(b64)
		raw[bit/8] ^= 1 << (bit % 8)
		return base64.StdEncoding.EncodeToString(raw)
	}
	cbc := base64.StdEncoding.EncodeToString(append(make([]byte, 16), []byte("0123456789abcdef")...))
	otherKey := katKey()
	otherKey[0] ^= 0xff

	cases := []struct {
		name     string
		envelope string
		cipher   *Cipher
		context  string
		wantErr  string
		is       error
	}{
		{"bad outer base64", "not base64!!", c, "kat", "Payload is not a FLIP encryption envelope", ErrNotEnvelope},
		{"outer base64 without padding", strings.TrimRight(katEnvelope, "="), c, "kat", "Payload is not a FLIP encryption envelope", ErrNotEnvelope},
		{"empty payload", "", c, "kat", "Payload is not a FLIP encryption envelope", ErrNotEnvelope},
		{"literal {}", "{}", c, "kat", "Payload is not a FLIP encryption envelope", ErrNotEnvelope},
		{"legacy CBC payload", cbc, c, "kat", "Payload is not a FLIP encryption envelope", ErrNotEnvelope},
		{"json list", rewrite(`[1,2,3]`), c, "kat", "Payload is not a FLIP encryption envelope", ErrNotEnvelope},
		{"json string", rewrite(`"envelope"`), c, "kat", "Payload is not a FLIP encryption envelope", ErrNotEnvelope},
		{"json number", rewrite(`42`), c, "kat", "Payload is not a FLIP encryption envelope", ErrNotEnvelope},
		{"json null", rewrite(`null`), c, "kat", "Payload is not a FLIP encryption envelope", ErrNotEnvelope},
		{"missing ct", rewrite(`{"v": 1, "kid": "shared", "iv": "` + iv + `"}`), c, "kat", "Payload is not a FLIP encryption envelope", ErrNotEnvelope},
		{"kid is a list", rewrite(`{"v": 1, "kid": ["shared"], "iv": "` + iv + `", "ct": "` + ct + `"}`), c, "kat", "Payload is not a FLIP encryption envelope", ErrNotEnvelope},
		{"iv is an int", rewrite(`{"v": 1, "kid": "shared", "iv": 7, "ct": "` + ct + `"}`), c, "kat", "Payload is not a FLIP encryption envelope", ErrNotEnvelope},
		{"ct is null", rewrite(`{"v": 1, "kid": "shared", "iv": "` + iv + `", "ct": null}`), c, "kat", "Payload is not a FLIP encryption envelope", ErrNotEnvelope},
		{"v is true", rewrite(`{"v": true, "kid": "shared", "iv": "` + iv + `", "ct": "` + ct + `"}`), c, "kat", "Payload is not a FLIP encryption envelope", ErrNotEnvelope},
		{"v is a string", rewrite(`{"v": "1", "kid": "shared", "iv": "` + iv + `", "ct": "` + ct + `"}`), c, "kat", "Payload is not a FLIP encryption envelope", ErrNotEnvelope},
		{"v is a float", rewrite(`{"v": 1.0, "kid": "shared", "iv": "` + iv + `", "ct": "` + ct + `"}`), c, "kat", "Payload is not a FLIP encryption envelope", ErrNotEnvelope},
		{"bad iv base64", rewrite(`{"v": 1, "kid": "shared", "iv": "***", "ct": "` + ct + `"}`), c, "kat", "Payload is not a FLIP encryption envelope", ErrNotEnvelope},
		{"bad ct base64", rewrite(`{"v": 1, "kid": "shared", "iv": "` + iv + `", "ct": "@@@"}`), c, "kat", "Payload is not a FLIP encryption envelope", ErrNotEnvelope},
		{"version 2", rewrite(strings.Replace(kat, `"v": 1`, `"v": 2`, 1)), c, "kat", "Unsupported payload version: 2", nil},
		{"8-byte nonce", rewrite(strings.Replace(kat, iv, "AAECAwQFBgc=", 1)), c, "kat", "Nonce must be 12 bytes, got 8", nil},
		{"16-byte nonce", rewrite(strings.Replace(kat, iv, "AAECAwQFBgcICQoLDA0ODw==", 1)), c, "kat", "Nonce must be 12 bytes, got 16", nil},
		{"unknown kid", rewrite(strings.Replace(kat, `"kid": "shared"`, `"kid": "trust-x"`, 1)), c, "kat", "No key registered for kid 'trust-x'", nil},
		{"tampered ct", rewrite(strings.Replace(kat, ct, flip(ct, 3), 1)), c, "kat", "failed authentication", ErrAuthentication},
		{"tampered tag", rewrite(strings.Replace(kat, ct, flip(ct, 8*25), 1)), c, "kat", "failed authentication", ErrAuthentication},
		{"tampered nonce", rewrite(strings.Replace(kat, iv, flip(iv, 0), 1)), c, "kat", "failed authentication", ErrAuthentication},
		{"wrong context", katEnvelope, c, "task:cohort_query", "failed authentication", ErrAuthentication},
		{"wrong key", katEnvelope, mustCipher(t, otherKey), "kat", "failed authentication", ErrAuthentication},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := tc.cipher.Open(tc.envelope, tc.context)
			if err == nil {
				t.Fatalf("opened %q, want error %q", got, tc.wantErr)
			}
			if err.Error() != tc.wantErr {
				t.Fatalf("err = %q, want %q", err, tc.wantErr)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("errors.Is(%v, %v) = false", err, tc.is)
			}
		})
	}
}

func TestTypedErrors(t *testing.T) {
	t.Parallel()
	c := mustCipher(t, katKey())
	decoded, _ := base64.StdEncoding.DecodeString(katEnvelope)
	_, err := c.Open(rewrite(strings.Replace(string(decoded), `"kid": "shared"`, `"kid": "trust-x"`, 1)), "kat")
	var kidErr *UnknownKIDError
	if !errors.As(err, &kidErr) || kidErr.KID != "trust-x" {
		t.Fatalf("want UnknownKIDError naming trust-x, got %v", err)
	}
	_, err = c.Open(rewrite(strings.Replace(string(decoded), `"v": 1`, `"v": 3`, 1)), "kat")
	var vErr *UnsupportedVersionError
	if !errors.As(err, &vErr) || vErr.Version != 3 {
		t.Fatalf("want UnsupportedVersionError 3, got %v", err)
	}
}

func TestKeyMustBe32Bytes(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 16, 24, 31, 33, 64} {
		_, err := New(make([]byte, n))
		var ks *KeySizeError
		if !errors.As(err, &ks) || ks.Size != n {
			t.Fatalf("New(%d bytes): err = %v", n, err)
		}
		want := "AES key must be 32 bytes (AES-256-GCM), got " + itoa(n)
		if err.Error() != want {
			t.Fatalf("err = %q, want %q", err, want)
		}
		if _, err := NewFromBase64(base64.StdEncoding.EncodeToString(make([]byte, n))); err == nil || err.Error() != want {
			t.Fatalf("NewFromBase64(%d bytes): err = %v", n, err)
		}
	}
	if _, err := NewFromBase64("%%%"); err == nil {
		t.Fatal("invalid base64 key accepted")
	}
	if _, err := NewFromBase64(base64.StdEncoding.EncodeToString(katKey())); err != nil {
		t.Fatalf("valid key rejected: %v", err)
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

func TestCohortAdminProofHashesTheBase64Text(t *testing.T) {
	t.Parallel()
	text := base64.StdEncoding.EncodeToString(katKey())
	got := CohortAdminProof(text)
	if len(got) != 64 {
		t.Fatalf("proof length %d", len(got))
	}
	if _, err := hex.DecodeString(got); err != nil {
		t.Fatal(err)
	}
	if got == CohortAdminProof(string(katKey())) {
		t.Fatal("proof must depend on the base64 text, not the raw key")
	}
	// sha256 of the text "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", computed independently.
	if want := "905f28def18eaac05ae6f12b2c3452744afaf626da1343d57b395b544e0519b6"; got != want {
		t.Fatalf("proof = %s, want %s", got, want)
	}
}

// FuzzOpen feeds arbitrary envelopes and contexts to Open: it must never
// panic, and anything it accepts must re-seal and re-open to the same bytes.
func FuzzOpen(f *testing.F) {
	f.Add(katEnvelope, "kat")
	f.Add(taskEnvelope, "task:cohort_query")
	f.Add("", "")
	f.Add(rewrite(`{"v": 1, "kid": "shared", "iv": "", "ct": ""}`), "")
	f.Add(rewrite(`{"v": 99999999999999999999, "kid": "shared", "iv": "AAECAwQFBgcICQoL", "ct": ""}`), "")
	c := mustCipher(f, katKey())
	f.Fuzz(func(t *testing.T, env, context string) {
		pt, err := c.Open(env, context)
		if err != nil {
			return
		}
		again, err := c.Seal(pt, context)
		if err != nil {
			t.Fatal(err)
		}
		back, err := c.Open(again, context)
		if err != nil || string(back) != string(pt) {
			t.Fatalf("re-seal round trip failed: %v", err)
		}
	})
}

func TestMalformed(t *testing.T) {
	c, err := New(make([]byte, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	good, _ := c.Seal([]byte("x"), "ctx")
	other, _ := New(append(make([]byte, KeySize-1), 1))
	cases := map[string]bool{
		"not base64": true,
		base64.StdEncoding.EncodeToString([]byte(`{"v": 2, "kid": "shared", "iv": "AAAAAAAAAAAAAAAA", "ct": "AAAA"}`)): true,
		base64.StdEncoding.EncodeToString([]byte(`{"v": 1, "kid": "other", "iv": "AAAAAAAAAAAAAAAA", "ct": "AAAA"}`)):  true,
		base64.StdEncoding.EncodeToString([]byte(`{"v": 1, "kid": "shared", "iv": "AAAA", "ct": "AAAA"}`)):             true,
	}
	for in, want := range cases {
		_, err := c.Open(in, "ctx")
		if err == nil || Malformed(err) != want {
			t.Errorf("Open(%q): %v, Malformed %v", in, err, Malformed(err))
		}
	}
	if _, err := other.Open(good, "ctx"); err == nil || Malformed(err) {
		t.Errorf("a wrong key is an authentication failure, not a malformed envelope: %v", err)
	}
}
