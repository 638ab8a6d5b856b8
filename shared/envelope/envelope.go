// Package envelope implements FLIP's AES-256-GCM payload envelope.
//
// An envelope is the standard base64 encoding of the JSON object
// {"v": 1, "kid": "shared", "iv": <b64 nonce>, "ct": <b64 ciphertext||tag>}.
// The additional authenticated data is "FLIP|v1|<kid>|<context>", so both the
// key id and a purpose context that each side derives (for example
// "task:cohort_query") are bound into the tag: a payload sealed for one task
// type cannot be replayed as another.
//
// A Cipher is safe for concurrent use. Open reports malformed input with the
// sentinel and typed errors below, whose messages match FLIP's wording.
package envelope

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

const (
	// Version is the only envelope version this package reads and writes.
	Version = 1
	// KID is the key id written into every envelope.
	KID = "shared"
	// ProjectIDContext binds the encrypted project id carried inside task payloads.
	ProjectIDContext = "project_id"
	// KeySize is the AES-256 key length in bytes.
	KeySize = 32
	// NonceSize is the GCM nonce length in bytes.
	NonceSize = 12
)

var (
	// ErrNotEnvelope reports input that is not a well-formed envelope.
	//lint:ignore ST1005 the wording is FLIP's and appears in task results
	ErrNotEnvelope = errors.New("Payload is not a FLIP encryption envelope")
	// ErrAuthentication reports a tag mismatch: tampered ciphertext or nonce,
	// a changed kid, the wrong key or the wrong context.
	ErrAuthentication = errors.New("failed authentication")
)

// UnsupportedVersionError reports an envelope whose "v" is not 1.
type UnsupportedVersionError struct{ Version int }

func (e *UnsupportedVersionError) Error() string {
	return fmt.Sprintf("Unsupported payload version: %d", e.Version)
}

// NonceSizeError reports an "iv" that does not decode to 12 bytes.
type NonceSizeError struct{ Size int }

func (e *NonceSizeError) Error() string {
	return fmt.Sprintf("Nonce must be %d bytes, got %d", NonceSize, e.Size)
}

// UnknownKIDError reports an envelope naming a key id the keyring lacks.
type UnknownKIDError struct{ KID string }

func (e *UnknownKIDError) Error() string {
	return fmt.Sprintf("No key registered for kid '%s'", e.KID)
}

// KeySizeError reports a key that is not exactly 32 bytes.
type KeySizeError struct{ Size int }

func (e *KeySizeError) Error() string {
	return fmt.Sprintf("AES key must be 32 bytes (AES-256-GCM), got %d", e.Size)
}

// Malformed reports whether err, from Open, means the input is not a usable
// envelope — not an envelope at all, an unsupported version, a bad nonce or
// an unknown key id — rather than one that failed authentication.
func Malformed(err error) bool {
	var (
		uv *UnsupportedVersionError
		ns *NonceSizeError
		uk *UnknownKIDError
	)
	return errors.Is(err, ErrNotEnvelope) || errors.As(err, &uv) || errors.As(err, &ns) || errors.As(err, &uk)
}

// TaskContext is the context a task payload is sealed under.
func TaskContext(taskType string) string { return "task:" + taskType }

// DecodeKey decodes a standard base64 key and checks its length.
func DecodeKey(b64 string) ([]byte, error) {
	key, err := base64.StdEncoding.Strict().DecodeString(strings.TrimSpace(b64))
	if err != nil {
		return nil, fmt.Errorf("decode AES key: invalid base64")
	}
	if len(key) != KeySize {
		return nil, &KeySizeError{Size: len(key)}
	}
	return key, nil
}

// Fingerprint is the first 12 hex characters of SHA-256 over the raw key,
// the value a FLIP hub reports as aes_key_fingerprint.
func Fingerprint(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:])[:12]
}

// CohortAdminProof is FLIP's cohort-admin proof: the SHA-256 hex digest of the
// base64 text of AES_KEY_BASE64 (the text, not the decoded key).
func CohortAdminProof(aesKeyBase64 string) string {
	sum := sha256.Sum256([]byte(aesKeyBase64))
	return hex.EncodeToString(sum[:])
}

// Cipher seals and opens envelopes with one shared key.
type Cipher struct {
	aead        cipher.AEAD
	fingerprint string
}

// New returns a Cipher for a 32-byte key.
func New(key []byte) (*Cipher, error) {
	if len(key) != KeySize {
		return nil, &KeySizeError{Size: len(key)}
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aes cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("gcm: %w", err)
	}
	return &Cipher{aead: aead, fingerprint: Fingerprint(key)}, nil
}

// NewFromBase64 returns a Cipher for a base64-encoded 32-byte key.
func NewFromBase64(b64 string) (*Cipher, error) {
	key, err := DecodeKey(b64)
	if err != nil {
		return nil, err
	}
	return New(key)
}

// Fingerprint returns the key's fingerprint.
func (c *Cipher) Fingerprint() string { return c.fingerprint }

func aad(kid, context string) []byte {
	return []byte("FLIP|v1|" + kid + "|" + context)
}

// Seal encrypts plaintext under context with a fresh random nonce.
func (c *Cipher) Seal(plaintext []byte, context string) (string, error) {
	nonce := make([]byte, NonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("nonce: %w", err)
	}
	return c.sealWithNonce(plaintext, context, nonce), nil
}

func (c *Cipher) sealWithNonce(plaintext []byte, context string, nonce []byte) string {
	ct := c.aead.Seal(nil, nonce, plaintext, aad(KID, context))
	// The field order and separators match FLIP's writer byte for byte.
	var b bytes.Buffer
	b.WriteString(`{"v": 1, "kid": "`)
	b.WriteString(KID)
	b.WriteString(`", "iv": "`)
	b.WriteString(base64.StdEncoding.EncodeToString(nonce))
	b.WriteString(`", "ct": "`)
	b.WriteString(base64.StdEncoding.EncodeToString(ct))
	b.WriteString(`"}`)
	return base64.StdEncoding.EncodeToString(b.Bytes())
}

// Open decrypts an envelope sealed under context.
func (c *Cipher) Open(envelope string, context string) ([]byte, error) {
	raw, err := base64.StdEncoding.Strict().DecodeString(envelope)
	if err != nil {
		return nil, ErrNotEnvelope
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return nil, ErrNotEnvelope
	}
	version, ok := jsonInt(fields["v"])
	if !ok {
		return nil, ErrNotEnvelope
	}
	kid, ok1 := jsonString(fields["kid"])
	ivText, ok2 := jsonString(fields["iv"])
	ctText, ok3 := jsonString(fields["ct"])
	if !ok1 || !ok2 || !ok3 {
		return nil, ErrNotEnvelope
	}
	nonce, err := base64.StdEncoding.Strict().DecodeString(ivText)
	if err != nil {
		return nil, ErrNotEnvelope
	}
	ct, err := base64.StdEncoding.Strict().DecodeString(ctText)
	if err != nil {
		return nil, ErrNotEnvelope
	}
	if version != Version {
		return nil, &UnsupportedVersionError{Version: version}
	}
	if len(nonce) != NonceSize {
		return nil, &NonceSizeError{Size: len(nonce)}
	}
	if kid != KID {
		return nil, &UnknownKIDError{KID: kid}
	}
	plaintext, err := c.aead.Open(nil, nonce, ct, aad(kid, context))
	if err != nil {
		return nil, ErrAuthentication
	}
	return plaintext, nil
}

// jsonInt accepts a JSON integer and rejects booleans, floats, strings and null.
func jsonInt(raw json.RawMessage) (int, bool) {
	if len(raw) == 0 {
		return 0, false
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return 0, false
	}
	n, ok := v.(json.Number)
	if !ok || strings.ContainsAny(n.String(), ".eE") {
		return 0, false
	}
	i, err := n.Int64()
	if err != nil || int64(int(i)) != i {
		return 0, false
	}
	return int(i), true
}

func jsonString(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}
