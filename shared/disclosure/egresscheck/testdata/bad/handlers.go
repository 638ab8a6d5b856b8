package bad

import (
	"net/http"

	"github.com/flip-trust/node/shared/disclosure"
)

type Response struct{ N int64 }

// statistics returns the raw payload: it never passed the disclosure layer.
func statistics(r *http.Request) (Response, error) {
	return Response{N: 3}, nil
}

func post(body []byte) error { return nil }

var _ = disclosure.Suppressed
