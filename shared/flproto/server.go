package flproto

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/flip-trust/node/shared/httpx"
)

type clientKey struct{}

// WithClient returns ctx carrying the authenticated client name.
func WithClient(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, clientKey{}, name)
}

// ClientFrom returns the authenticated client name ctx carries ("" when none).
func ClientFrom(ctx context.Context) string {
	name, _ := ctx.Value(clientKey{}).(string)
	return name
}

// HashSecret is the digest under which a server keeps a client's secret.
func HashSecret(secret string) [sha256.Size]byte { return sha256.Sum256([]byte(secret)) }

// ParseSecretDigest parses the hex form of a HashSecret digest.
func ParseSecretDigest(s string) ([sha256.Size]byte, error) {
	var d [sha256.Size]byte
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != sha256.Size {
		return d, fmt.Errorf("secret digest: want %d hex digits", 2*sha256.Size)
	}
	copy(d[:], b)
	return d, nil
}

// Authenticator checks the X-FL-Client and Authorization: Bearer pair of
// every request against the clients it knows, stored as the SHA-256 of their
// secrets. It is safe for concurrent use.
type Authenticator struct {
	clients []authClient
	source  func() map[string][sha256.Size]byte
}

type authClient struct {
	name   []byte
	digest [sha256.Size]byte
}

// NewAuthenticator returns an Authenticator for clients, a map of client
// name to the SHA-256 of its secret (HashSecret).
func NewAuthenticator(clients map[string][sha256.Size]byte) *Authenticator {
	a := &Authenticator{}
	for name, d := range clients {
		a.clients = append(a.clients, authClient{name: []byte(name), digest: d})
	}
	sort.Slice(a.clients, func(i, j int) bool { return string(a.clients[i].name) < string(a.clients[j].name) })
	return a
}

// NewAuthenticatorFunc returns an Authenticator that reads the current
// clients from source on every request, for servers where clients register
// while they run. source must be safe for concurrent use.
func NewAuthenticatorFunc(source func() map[string][sha256.Size]byte) *Authenticator {
	return &Authenticator{source: source}
}

func (a *Authenticator) known() []authClient {
	if a.source == nil {
		return a.clients
	}
	m := a.source()
	out := make([]authClient, 0, len(m))
	for name, d := range m {
		out = append(out, authClient{name: []byte(name), digest: d})
	}
	return out
}

// Authenticate returns the client r authenticates as. Every known client is
// compared in constant time, with no early exit, so that the time taken
// says nothing about which part was wrong. With mutual TLS the client
// certificate's common name must equal the client name as well.
func (a *Authenticator) Authenticate(r *http.Request) (string, error) {
	name := r.Header.Get(HeaderClient)
	secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if name == "" || !ok || secret == "" {
		return "", errors.New("X-FL-Client and Authorization: Bearer <secret> are required")
	}
	digest := HashSecret(secret)
	match := 0
	for _, c := range a.known() {
		match |= subtle.ConstantTimeCompare([]byte(name), c.name) & subtle.ConstantTimeCompare(digest[:], c.digest[:])
	}
	if match != 1 {
		return "", errors.New("unknown client or wrong secret")
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && r.TLS.PeerCertificates[0].Subject.CommonName != name {
		return "", errors.New("the client certificate does not name this client")
	}
	return name, nil
}

// Middleware admits only authenticated requests, with the client name in
// their context (ClientFrom); others get 401 {"detail": ...}.
func (a *Authenticator) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, err := a.Authenticate(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="fl"`)
			httpx.WriteJSON(w, http.StatusUnauthorized, Problem{Detail: err.Error()})
			return
		}
		next.ServeHTTP(w, r.WithContext(WithClient(r.Context(), name)))
	})
}

// MaxManifestBody bounds the JSON body of POST /fl/v1/uploads.
const MaxManifestBody = 8 << 20

// ArtifactHandler serves the artifact and upload routes of the FL protocol
// from an ArtifactStore and Uploads. It expects the authenticated client
// name in each request's context (Authenticator.Middleware, or WithClient)
// and answers 401 without one.
type ArtifactHandler struct {
	store   *ArtifactStore
	uploads *Uploads
	router  chi.Router
}

// NewArtifactHandler returns the handler of the artifact and upload routes.
func NewArtifactHandler(store *ArtifactStore, uploads *Uploads) *ArtifactHandler {
	h := &ArtifactHandler{store: store, uploads: uploads, router: chi.NewRouter()}
	h.Routes(h.router)
	return h
}

// Routes registers the artifact and upload routes on r (for a server that
// serves the task routes beside them).
func (h *ArtifactHandler) Routes(r chi.Router) {
	r.Get(PathArtifact, h.getManifest)
	r.Get(PathChunk, h.getChunk)
	r.Post(PathUploads, h.openUpload)
	r.Get(PathUpload, h.getUpload)
	r.Put(PathUploadPart, h.putChunk)
	r.Post(PathComplete, h.complete)
}

// ServeHTTP serves the artifact and upload routes.
func (h *ArtifactHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.router.ServeHTTP(w, r)
}

func (h *ArtifactHandler) client(w http.ResponseWriter, r *http.Request) (string, bool) {
	name := ClientFrom(r.Context())
	if name == "" {
		httpx.WriteJSON(w, http.StatusUnauthorized, Problem{Detail: "not authenticated"})
		return "", false
	}
	return name, true
}

func (h *ArtifactHandler) getManifest(w http.ResponseWriter, r *http.Request) {
	if _, ok := h.client(w, r); !ok {
		return
	}
	m, err := h.store.Manifest(chi.URLParam(r, "id"))
	if err != nil {
		writeProblem(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, m)
}

func (h *ArtifactHandler) getChunk(w http.ResponseWriter, r *http.Request) {
	if _, ok := h.client(w, r); !ok {
		return
	}
	f, m, err := h.store.Open(chi.URLParam(r, "id"))
	if err != nil {
		writeProblem(w, r, err)
		return
	}
	defer f.Close()
	n, err := strconv.Atoi(chi.URLParam(r, "n"))
	if err != nil || n < 0 || n >= len(m.Chunks) {
		httpx.WriteJSON(w, http.StatusNotFound, Problem{Detail: fmt.Sprintf("artifact %s has %d chunks", m.ID, len(m.Chunks))})
		return
	}
	off, length := m.ChunkSpan(n)
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		writeProblem(w, r, fmt.Errorf("seek chunk %d of %s: %w", n, m.ID, err))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(length, 10))
	w.Header().Set(HeaderChunkSHA256, m.Chunks[n])
	w.WriteHeader(http.StatusOK)
	// A limited *os.File lets the connection use sendfile(2).
	if _, err := io.Copy(bodyWriter(w), io.LimitReader(f, length)); err != nil {
		httpx.LoggerFrom(r.Context()).Debug("chunk not fully sent", "artifact", m.ID, "chunk", n, "error", err.Error())
	}
}

// bodyWriter unwraps middleware writers down to one that implements
// io.ReaderFrom (net/http's own does, with sendfile), once the status has
// gone through the wrappers.
func bodyWriter(w http.ResponseWriter) io.Writer {
	for cur := w; ; {
		if rf, ok := cur.(io.ReaderFrom); ok {
			return struct {
				io.Writer
				io.ReaderFrom
			}{cur, rf}
		}
		u, ok := cur.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		cur = u.Unwrap()
	}
}

func (h *ArtifactHandler) openUpload(w http.ResponseWriter, r *http.Request) {
	client, ok := h.client(w, r)
	if !ok {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxManifestBody)
	var m Manifest
	if err := httpx.DecodeJSON(r, &m); err != nil {
		writeProblem(w, r, err)
		return
	}
	st, err := h.uploads.Open(r.Context(), client, m)
	if err != nil {
		writeProblem(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, st)
}

func (h *ArtifactHandler) getUpload(w http.ResponseWriter, r *http.Request) {
	client, ok := h.client(w, r)
	if !ok {
		return
	}
	st, err := h.uploads.State(r.Context(), client, chi.URLParam(r, "id"))
	if err != nil {
		writeProblem(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, st)
}

func (h *ArtifactHandler) putChunk(w http.ResponseWriter, r *http.Request) {
	client, ok := h.client(w, r)
	if !ok {
		return
	}
	n, err := strconv.Atoi(chi.URLParam(r, "n"))
	if err != nil {
		httpx.WriteJSON(w, http.StatusBadRequest, Problem{Detail: "chunk number must be an integer"})
		return
	}
	if r.ContentLength > MaxChunkSize {
		httpx.WriteJSON(w, http.StatusRequestEntityTooLarge, Problem{Detail: fmt.Sprintf("a chunk is at most %d bytes", MaxChunkSize)})
		return
	}
	err = h.uploads.PutChunk(r.Context(), client, chi.URLParam(r, "id"), n, r.Header.Get(HeaderChunkSHA256), r.Body)
	if err != nil {
		writeProblem(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *ArtifactHandler) complete(w http.ResponseWriter, r *http.Request) {
	client, ok := h.client(w, r)
	if !ok {
		return
	}
	var req CompleteRequest
	if r.ContentLength != 0 {
		r.Body = http.MaxBytesReader(w, r.Body, MaxManifestBody)
		if err := httpx.DecodeJSON(r, &req); err != nil {
			writeProblem(w, r, err)
			return
		}
	}
	id, err := h.uploads.Complete(r.Context(), client, chi.URLParam(r, "id"), req.SHA256)
	if err != nil {
		writeProblem(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, Completed{Artifact: id})
}

// writeProblem maps err to its status and writes {"detail": ...}.
func writeProblem(w http.ResponseWriter, r *http.Request, err error) {
	var (
		missing *MissingError
		he      *httpx.Error
		maxErr  *http.MaxBytesError
	)
	switch {
	case errors.As(err, &missing):
		httpx.WriteJSON(w, http.StatusConflict, Problem{Detail: err.Error(), Missing: missing.Missing})
	case errors.As(err, &he):
		httpx.WriteError(w, r, err)
	case errors.As(err, &maxErr):
		httpx.WriteJSON(w, http.StatusRequestEntityTooLarge, Problem{Detail: err.Error()})
	case errors.Is(err, ErrBadID):
		httpx.WriteJSON(w, http.StatusBadRequest, Problem{Detail: err.Error()})
	case errors.Is(err, ErrNotFound):
		httpx.WriteJSON(w, http.StatusNotFound, Problem{Detail: err.Error()})
	case errors.Is(err, ErrTooLarge):
		httpx.WriteJSON(w, http.StatusRequestEntityTooLarge, Problem{Detail: err.Error()})
	case errors.Is(err, ErrInvalid), errors.Is(err, ErrDigest):
		httpx.WriteJSON(w, http.StatusBadRequest, Problem{Detail: err.Error()})
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads the answer.
		w.WriteHeader(http.StatusServiceUnavailable)
	default:
		httpx.WriteError(w, r, err)
	}
}
