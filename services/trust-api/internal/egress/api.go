package egress

import (
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/flip-trust/node/shared/httpx"
)

// Reviewer API paths.
const (
	ReviewPrefix = "/review/v1"
	MeshPrefix   = "/egress/v1"
)

// ReviewRoutes mounts the reviewer API on r under /review/v1, every route
// behind Authorization: Bearer <key> (compared in constant time). key must
// be non-empty; the caller decides whether the API runs at all.
func ReviewRoutes(r chi.Router, g *Gate, key string) {
	r.Route(ReviewPrefix, func(r chi.Router) {
		r.Use(bearer(key))
		r.Get("/items", httpx.Handle(func(req *http.Request) ([]Item, error) {
			var states []State
			if s := req.URL.Query().Get("state"); s != "" {
				for part := range strings.SplitSeq(s, ",") {
					states = append(states, State(strings.TrimSpace(part)))
				}
			}
			items, err := g.List(states...)
			if items == nil {
				items = []Item{}
			}
			return items, err
		}))
		r.Get("/items/{id}", httpx.Handle(func(req *http.Request) (Item, error) {
			it, err := g.Get(chi.URLParam(req, "id"))
			return it, mapErr(err)
		}))
		r.Get("/items/{id}/content", func(w http.ResponseWriter, req *http.Request) {
			b, err := g.Content(chi.URLParam(req, "id"))
			if err != nil {
				httpx.WriteError(w, req, mapErr(err))
				return
			}
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.Header().Set("Content-Disposition", "attachment")
			_, _ = w.Write(b)
		})
		r.Post("/items/{id}/approve", httpx.Handle(func(req *http.Request) (Item, error) {
			var body struct {
				Reviewer string `json:"reviewer"`
				Note     string `json:"note"`
			}
			if err := httpx.DecodeJSONStrict(req, &body); err != nil {
				return Item{}, err
			}
			it, err := g.Approve(chi.URLParam(req, "id"), strings.TrimSpace(body.Reviewer), body.Note)
			return it, mapErr(err)
		}))
		r.Post("/items/{id}/reject", httpx.Handle(func(req *http.Request) (Item, error) {
			var body struct {
				Reviewer string `json:"reviewer"`
				Reason   string `json:"reason"`
			}
			if err := httpx.DecodeJSONStrict(req, &body); err != nil {
				return Item{}, err
			}
			it, err := g.Reject(chi.URLParam(req, "id"), strings.TrimSpace(body.Reviewer), strings.TrimSpace(body.Reason))
			return it, mapErr(err)
		}))
	})
}

// bearer admits requests carrying Authorization: Bearer <key>.
func bearer(key string) func(http.Handler) http.Handler {
	want := []byte(key)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || len(want) == 0 || subtle.ConstantTimeCompare([]byte(got), want) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="egress-review"`)
				httpx.WriteJSON(w, http.StatusUnauthorized, httpx.ErrorBody{Detail: "reviewer key required"})
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotFound):
		return httpx.NewError(http.StatusNotFound, err.Error())
	case errors.Is(err, ErrNoContent):
		return httpx.NewError(http.StatusNotFound, err.Error())
	case errors.Is(err, ErrDecided):
		return httpx.NewError(http.StatusConflict, err.Error())
	case errors.Is(err, ErrInvalid):
		return httpx.NewError(http.StatusUnprocessableEntity, err.Error())
	}
	return err
}

// SubmitBody is the body of POST /egress/v1/items.
type SubmitBody struct {
	Channel       Channel  `json:"channel"`
	TaskID        string   `json:"task_id"`
	Project       string   `json:"project"`
	Kind          string   `json:"kind"`
	ContentBase64 *string  `json:"content_base64,omitempty"`
	Size          int64    `json:"size"`
	SHA256        string   `json:"sha256"`
	Rules         []string `json:"rules"`
}

// Decision answers POST /egress/v1/items.
type Decision struct {
	Decision string `json:"decision"`
	ID       string `json:"id"`
	Seq      uint64 `json:"seq,omitempty"`
	Reason   string `json:"reason,omitempty"`
	status   int
}

// StatusCode implements httpx.StatusCoder.
func (d Decision) StatusCode() int { return d.status }

// Status answers GET /egress/v1/items/{id}.
type Status struct {
	ID     string `json:"id"`
	State  State  `json:"state"`
	Reason string `json:"reason,omitempty"`
	Seq    uint64 `json:"seq,omitempty"`
}

// MeshRoutes mounts the egress gate's mesh API on r under /egress/v1;
// auth is the mesh middleware admitting its callers.
func MeshRoutes(r chi.Router, g *Gate, auth func(http.Handler) http.Handler) {
	r.Route(MeshPrefix, func(r chi.Router) {
		r.Use(auth)
		r.Post("/items", httpx.Handle(func(req *http.Request) (Decision, error) {
			var body SubmitBody
			if err := httpx.DecodeJSONStrict(req, &body); err != nil {
				return Decision{}, err
			}
			sr := Request{Channel: body.Channel, TaskID: body.TaskID, Project: body.Project, Kind: body.Kind,
				Size: body.Size, SHA256: body.SHA256, Rules: body.Rules}
			if body.ContentBase64 != nil {
				b, err := base64.StdEncoding.DecodeString(*body.ContentBase64)
				if err != nil {
					return Decision{}, httpx.Errorf(http.StatusUnprocessableEntity, "content_base64: not standard base64")
				}
				sr.Content = b
			}
			it, err := g.Submit(sr)
			if err != nil {
				return Decision{}, mapErr(err)
			}
			switch {
			case it.Leaves():
				return Decision{Decision: "released", ID: it.ID, Seq: it.Seq, status: http.StatusOK}, nil
			case it.Final():
				return Decision{Decision: string(it.State), ID: it.ID, Reason: it.Reason, status: http.StatusForbidden}, nil
			}
			return Decision{Decision: string(Held), ID: it.ID, status: http.StatusAccepted}, nil
		}))
		r.Get("/items/{id}", httpx.Handle(func(req *http.Request) (Status, error) {
			it, err := g.Get(chi.URLParam(req, "id"))
			if err != nil {
				return Status{}, mapErr(err)
			}
			st := it.State
			if st == Approved {
				st = Held // the release is being ledgered
			}
			return Status{ID: it.ID, State: st, Reason: it.Reason, Seq: it.Seq}, nil
		}))
	})
}
