package flserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/flip-trust/node/shared/safetensors"
)

// blockElems is how many elements of a tensor are averaged at a time, so
// memory stays a few blocks whatever the model's size.
const blockElems = 1 << 16

// openWeights opens artifact id and reads its safetensors header.
func (s *Server) openWeights(id string) (*os.File, *safetensors.Header, error) {
	f, _, err := s.arts.Open(id)
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", id, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("stat %s: %w", id, err)
	}
	h, err := safetensors.ReadHeader(f, st.Size())
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", id, err)
	}
	return f, h, nil
}

// checkUpdates splits updates into those whose tensors have exactly the
// global model's names, shapes and dtypes and those refused, with the
// reason. An unreadable global model is an error.
func (s *Server) checkUpdates(global string, updates []okResult) ([]okResult, map[string]string, error) {
	gf, gh, err := s.openWeights(global)
	if err != nil {
		return nil, nil, fmt.Errorf("global model: %w", err)
	}
	defer gf.Close()
	rejected := map[string]string{}
	var accepted []okResult
	for _, u := range updates {
		uf, uh, err := s.openWeights(u.update)
		if err != nil {
			rejected[u.client] = fmt.Sprintf("update is not readable safetensors: %v", err)
			continue
		}
		uf.Close()
		if why := mismatch(gh, uh); why != "" {
			rejected[u.client] = "update " + why
			continue
		}
		accepted = append(accepted, u)
	}
	return accepted, rejected, nil
}

// mismatch describes how u's tensors differ from g's, or returns "".
func mismatch(g, u *safetensors.Header) string {
	for _, gt := range g.Tensors {
		ut, ok := u.Tensor(gt.Name)
		switch {
		case !ok:
			return fmt.Sprintf("lacks tensor %q", gt.Name)
		case ut.DType != gt.DType:
			return fmt.Sprintf("tensor %q is %s, the global model's is %s", gt.Name, ut.DType, gt.DType)
		case !slices.Equal(ut.Shape, gt.Shape):
			return fmt.Sprintf("tensor %q has shape %v, the global model's is %v", gt.Name, ut.Shape, gt.Shape)
		}
	}
	if len(u.Tensors) != len(g.Tensors) {
		for _, ut := range u.Tensors {
			if _, ok := g.Tensor(ut.Name); !ok {
				return fmt.Sprintf("has tensor %q, which the global model lacks", ut.Name)
			}
		}
	}
	return ""
}

// errAbandoned stops the averaging writer when the store stops reading.
var errAbandoned = errors.New("aggregated model abandoned")

// fedAvg computes global + Σ (nᵢ/total)·updateᵢ tensor by tensor, in blocks,
// streams it into the artifact store and returns the new model's id. Tensors
// of non-float dtypes are copied from the global model.
func (s *Server) fedAvg(ctx context.Context, global string, updates []okResult, total int64) (string, error) {
	gf, gh, err := s.openWeights(global)
	if err != nil {
		return "", fmt.Errorf("global model: %w", err)
	}
	defer gf.Close()
	srcs := make([]weightsSource, 0, len(updates))
	defer func() {
		for _, src := range srcs {
			src.f.Close()
		}
	}()
	for _, u := range updates {
		f, h, err := s.openWeights(u.update)
		if err != nil {
			return "", fmt.Errorf("update of %s: %w", u.client, err)
		}
		srcs = append(srcs, weightsSource{f: f, h: h, weight: float64(u.n) / float64(total)})
	}

	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		// Ends when the average is written or the reader side is closed.
		err := writeAverage(ctx, pw, weightsSource{f: gf, h: gh}, srcs)
		pw.CloseWithError(err)
		done <- err
	}()
	m, putErr := s.arts.Put(ctx, pr)
	pr.CloseWithError(errAbandoned)
	if err := <-done; err != nil && !errors.Is(err, errAbandoned) {
		return "", err
	}
	if putErr != nil {
		return "", fmt.Errorf("store aggregated model: %w", putErr)
	}
	return m.ID, nil
}

type weightsSource struct {
	f      *os.File
	h      *safetensors.Header
	weight float64
}

// read decodes count elements of t from element off into dst.
func (w weightsSource) read(t safetensors.TensorInfo, es int, off, count int64, buf []byte, dst []float64) error {
	b := buf[:count*int64(es)]
	if _, err := w.f.ReadAt(b, w.h.DataStart+t.Begin+off*int64(es)); err != nil {
		return fmt.Errorf("read tensor %q: %w", t.Name, err)
	}
	if err := safetensors.DecodeFloats(t.DType, b, dst[:count]); err != nil {
		return fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	return nil
}

func writeAverage(ctx context.Context, w io.Writer, global weightsSource, updates []weightsSource) error {
	infos := make([]safetensors.TensorInfo, len(global.h.Tensors))
	for i, t := range global.h.Tensors {
		infos[i] = safetensors.TensorInfo{Name: t.Name, DType: t.DType, Shape: t.Shape}
	}
	sw, err := safetensors.NewWriter(w, infos, global.h.Metadata)
	if err != nil {
		return fmt.Errorf("write header: %w", err)
	}
	acc := make([]float64, blockElems)
	tmp := make([]float64, blockElems)
	var buf []byte
	for _, gt := range global.h.Tensors {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !gt.DType.Float() {
			if _, err := io.Copy(sw, io.NewSectionReader(global.f, global.h.DataStart+gt.Begin, gt.End-gt.Begin)); err != nil {
				return fmt.Errorf("copy tensor %q: %w", gt.Name, err)
			}
			continue
		}
		es, err := gt.DType.Size()
		if err != nil {
			return err
		}
		if need := blockElems * es; len(buf) < need {
			buf = make([]byte, need)
		}
		uts := make([]safetensors.TensorInfo, len(updates))
		for i, u := range updates {
			uts[i], _ = u.h.Tensor(gt.Name)
		}
		n := gt.Elements()
		for off := int64(0); off < n; off += blockElems {
			count := min(int64(blockElems), n-off)
			if err := global.read(gt, es, off, count, buf, acc); err != nil {
				return fmt.Errorf("global model: %w", err)
			}
			for i, u := range updates {
				if err := u.read(uts[i], es, off, count, buf, tmp); err != nil {
					return fmt.Errorf("update: %w", err)
				}
				for k := range count {
					acc[k] += u.weight * tmp[k]
				}
			}
			out := buf[:count*int64(es)]
			if err := safetensors.EncodeFloats(gt.DType, acc[:count], out); err != nil {
				return fmt.Errorf("tensor %q: %w", gt.Name, err)
			}
			if _, err := sw.Write(out); err != nil {
				return fmt.Errorf("write tensor %q: %w", gt.Name, err)
			}
		}
	}
	return sw.Close()
}
