package privacy

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/flip-trust/node/shared/safetensors"
)

// Metadata keys of an update file. The values say how the update was
// filtered; nothing that depends on the data (such as the norm before
// clipping) is written.
const (
	MetaUpdate          = "flip.update"
	MetaClipNorm        = "flip.clip_norm"
	MetaNoiseMultiplier = "flip.noise_multiplier"
	// UpdateDelta is MetaUpdate's value: the file holds local − global.
	UpdateDelta = "delta"
)

// Errors of Update, for errors.Is.
var (
	// ErrMismatch marks trained weights whose tensors differ from the
	// global model's in name, dtype or shape.
	ErrMismatch = errors.New("trained weights do not match the global model")
	// ErrUnsupportedDType marks a tensor whose dtype has no known element size.
	ErrUnsupportedDType = errors.New("tensor dtype has no known element size")
	// ErrNotFinite marks an update with NaN or infinite values, or whose
	// norm overflows.
	ErrNotFinite = errors.New("update is not finite")
)

// Stats describes one update. They are for the site's own log: the norm
// before clipping depends on the data and never leaves the trust.
type Stats struct {
	Norm     float64 // L2 norm of local − global, before clipping
	Scale    float64 // factor applied to the update: 1, or ClipNorm/Norm when clipped
	Clipped  bool    // the norm exceeded ClipNorm
	Elements int64   // coordinates in the update
	Bytes    int64   // tensor bytes of the update (the global model's size)
}

// maxMismatches bounds the tensors a mismatch error names.
const maxMismatches = 10

// defaultBlockElems is the number of coordinates processed as one block.
const defaultBlockElems = 1 << 16

// maxWorkers bounds the goroutines of one update (and so its memory).
const maxWorkers = 8

// options are the knobs tests turn; production uses the zero value.
type options struct {
	seed       *[32]byte // nil: every worker is seeded from crypto/rand
	workers    int       // 0: GOMAXPROCS, at most maxWorkers
	blockElems int64     // 0: defaultBlockElems
}

// Update writes to outPath the filtered training update of the weights at
// localPath against the global model at globalPath: local − global for every
// tensor, the whole update clipped to an L2 norm of cfg.ClipNorm (0: no
// clipping), then Gaussian noise N(0, (cfg.NoiseMultiplier·cfg.ClipNorm)²)
// added to every coordinate. The output is safetensors in the global model's
// dtypes and tensor order, with the global model's metadata plus MetaUpdate,
// MetaClipNorm and MetaNoiseMultiplier, and appears at outPath only when
// complete (written to a temporary file beside it, then renamed).
//
// Both files are streamed in blocks, twice (the norm, then the output), so
// memory does not grow with the model. Blocks are spread over the available
// cores; each worker draws noise from its own ChaCha8 stream seeded from
// crypto/rand. Update is safe for concurrent use.
func Update(ctx context.Context, cfg Config, globalPath, localPath, outPath string) (Stats, error) {
	return update(ctx, cfg, globalPath, localPath, outPath, options{})
}

func update(ctx context.Context, cfg Config, globalPath, localPath, outPath string, opts options) (Stats, error) {
	if err := cfg.Validate(); err != nil {
		return Stats{}, fmt.Errorf("filter config: %w", err)
	}
	g, err := safetensors.Open(globalPath)
	if err != nil {
		return Stats{}, fmt.Errorf("global model: %w", err)
	}
	defer g.Close()
	l, err := safetensors.Open(localPath)
	if err != nil {
		return Stats{}, fmt.Errorf("trained weights: %w", err)
	}
	defer l.Close()
	pairs, err := match(&g.Header, &l.Header)
	if err != nil {
		return Stats{}, err
	}
	u := newUpdater(g, l, pairs, opts)
	st := Stats{Scale: 1}
	for _, p := range pairs {
		st.Elements += p.n
		st.Bytes += p.n * int64(p.es)
	}
	sumsq, err := u.sumSquares(ctx)
	if err != nil {
		return Stats{}, err
	}
	st.Norm = math.Sqrt(sumsq)
	if cfg.ClipNorm > 0 && st.Norm > cfg.ClipNorm {
		st.Clipped = true
		st.Scale = cfg.ClipNorm / st.Norm
	}
	u.scale = st.Scale
	u.sigma = cfg.NoiseMultiplier * cfg.ClipNorm
	seeds, err := workerSeeds(u.workers, u.sigma > 0, opts.seed)
	if err != nil {
		return Stats{}, err
	}
	meta := make(map[string]string, len(g.Metadata)+3)
	for k, v := range g.Metadata {
		meta[k] = v
	}
	meta[MetaUpdate] = UpdateDelta
	meta[MetaClipNorm] = strconv.FormatFloat(cfg.ClipNorm, 'g', -1, 64)
	meta[MetaNoiseMultiplier] = strconv.FormatFloat(cfg.NoiseMultiplier, 'g', -1, 64)
	infos := make([]safetensors.TensorInfo, len(pairs))
	for i, p := range pairs {
		infos[i] = safetensors.TensorInfo{Name: p.g.Name, DType: p.g.DType, Shape: p.g.Shape}
	}
	err = writeAtomic(outPath, func(w io.Writer) error {
		sw, err := safetensors.NewWriter(w, infos, meta)
		if err != nil {
			return err
		}
		if err := u.write(ctx, sw, seeds); err != nil {
			return err
		}
		return sw.Close()
	})
	if err != nil {
		return Stats{}, fmt.Errorf("write update: %w", err)
	}
	return st, nil
}

// pair is one tensor in both files.
type pair struct {
	g, l safetensors.TensorInfo
	es   int   // element size
	n    int64 // elements
	// fixed marks a tensor of a non-float dtype (a counter such as
	// BatchNorm's num_batches_tracked): it is not trained, so its update is
	// zero whatever the job wrote, and its local values never leave.
	fixed bool
}

// match pairs the tensors of the global model and the trained weights, in
// the global model's data order, and lists every difference.
func match(g, l *safetensors.Header) ([]pair, error) {
	local := make(map[string]safetensors.TensorInfo, len(l.Tensors))
	for _, t := range l.Tensors {
		local[t.Name] = t
	}
	var problems []string
	var unsupported error
	pairs := make([]pair, 0, len(g.Tensors))
	for _, gt := range g.Tensors {
		lt, ok := local[gt.Name]
		if !ok {
			problems = append(problems, fmt.Sprintf("tensor %q is in the global model but not in the trained weights", gt.Name))
			continue
		}
		delete(local, gt.Name)
		switch {
		case lt.DType != gt.DType:
			problems = append(problems, fmt.Sprintf("tensor %q is %s in the trained weights, %s in the global model", gt.Name, lt.DType, gt.DType))
			continue
		case !slices.Equal(lt.Shape, gt.Shape):
			problems = append(problems, fmt.Sprintf("tensor %q has shape %v in the trained weights, %v in the global model", gt.Name, lt.Shape, gt.Shape))
			continue
		}
		es, err := gt.DType.Size()
		if err != nil {
			if unsupported == nil {
				unsupported = fmt.Errorf("tensor %q is %s: %w", gt.Name, gt.DType, ErrUnsupportedDType)
			}
			continue
		}
		pairs = append(pairs, pair{g: gt, l: lt, es: es, n: gt.Elements(), fixed: !gt.DType.Float()})
	}
	extra := make([]string, 0, len(local))
	for name := range local {
		extra = append(extra, name)
	}
	sort.Strings(extra)
	for _, name := range extra {
		problems = append(problems, fmt.Sprintf("tensor %q is in the trained weights but not in the global model", name))
	}
	if len(problems) > 0 {
		msg := problems
		if len(msg) > maxMismatches {
			msg = append(slices.Clip(msg[:maxMismatches]), fmt.Sprintf("and %d more", len(problems)-maxMismatches))
		}
		return nil, fmt.Errorf("%w: %s", ErrMismatch, strings.Join(msg, "; "))
	}
	if unsupported != nil {
		return nil, unsupported
	}
	return pairs, nil
}

// updater streams one update's blocks through its workers.
type updater struct {
	pairs      []pair
	gsec, lsec []*io.SectionReader // per pair; ReadAt is safe for concurrent use
	workers    int
	blockElems int64
	maxES      int
	scale      float64
	sigma      float64
}

func newUpdater(g, l *safetensors.File, pairs []pair, opts options) *updater {
	u := &updater{pairs: pairs, workers: opts.workers, blockElems: opts.blockElems, scale: 1}
	if u.workers <= 0 {
		u.workers = min(runtime.GOMAXPROCS(0), maxWorkers)
	}
	if u.blockElems <= 0 {
		u.blockElems = defaultBlockElems
	}
	u.maxES = 1
	u.gsec = make([]*io.SectionReader, len(pairs))
	u.lsec = make([]*io.SectionReader, len(pairs))
	for i, p := range pairs {
		u.gsec[i] = g.Section(p.g)
		u.lsec[i] = l.Section(p.l)
		u.maxES = max(u.maxES, p.es)
	}
	return u
}

// block is a run of coordinates of one tensor.
type block struct {
	pair  int
	first int64
	n     int64
}

// eachBlock calls fn for worker w's blocks, in order: block i of the whole
// update belongs to worker i mod workers.
func (u *updater) eachBlock(w int, fn func(block) error) error {
	i := 0
	for p, pr := range u.pairs {
		for first := int64(0); first < pr.n; first += u.blockElems {
			if i%u.workers == w {
				if err := fn(block{pair: p, first: first, n: min(u.blockElems, pr.n-first)}); err != nil {
					return err
				}
			}
			i++
		}
	}
	return nil
}

// scratch is one worker's buffers, reused for every block.
type scratch struct {
	graw, lraw []byte
	gv, lv     []float64
}

func (u *updater) newScratch() *scratch {
	return &scratch{
		graw: make([]byte, u.blockElems*int64(u.maxES)),
		lraw: make([]byte, u.blockElems*int64(u.maxES)),
		gv:   make([]float64, u.blockElems),
		lv:   make([]float64, u.blockElems),
	}
}

// load reads and decodes block b of both files into s.
func (u *updater) load(s *scratch, b block) (gv, lv []float64, err error) {
	p := u.pairs[b.pair]
	nb := b.n * int64(p.es)
	off := b.first * int64(p.es)
	graw, lraw := s.graw[:nb], s.lraw[:nb]
	if err := readAt(u.gsec[b.pair], graw, off); err != nil {
		return nil, nil, fmt.Errorf("read global tensor %q: %w", p.g.Name, err)
	}
	if err := readAt(u.lsec[b.pair], lraw, off); err != nil {
		return nil, nil, fmt.Errorf("read trained tensor %q: %w", p.l.Name, err)
	}
	gv, lv = s.gv[:b.n], s.lv[:b.n]
	if err := safetensors.DecodeFloats(p.g.DType, graw, gv); err != nil {
		return nil, nil, fmt.Errorf("global tensor %q: %w", p.g.Name, err)
	}
	if err := safetensors.DecodeFloats(p.l.DType, lraw, lv); err != nil {
		return nil, nil, fmt.Errorf("trained tensor %q: %w", p.l.Name, err)
	}
	return gv, lv, nil
}

func readAt(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// sumSquares is the first pass: the squared L2 norm of local − global.
func (u *updater) sumSquares(ctx context.Context) (float64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sums := make([]float64, u.workers)
	errs := make([]error, u.workers)
	var wg sync.WaitGroup
	for w := range u.workers {
		wg.Go(func() {
			s := u.newScratch()
			errs[w] = u.eachBlock(w, func(b block) error {
				if err := ctx.Err(); err != nil {
					return err
				}
				if u.pairs[b.pair].fixed {
					return nil
				}
				gv, lv, err := u.load(s, b)
				if err != nil {
					return err
				}
				var sum float64
				for i, l := range lv {
					d := l - gv[i]
					sum += d * d
				}
				if math.IsNaN(sum) || math.IsInf(sum, 0) {
					return fmt.Errorf("tensor %q: %w", u.pairs[b.pair].g.Name, ErrNotFinite)
				}
				sums[w] += sum
				return nil
			})
			if errs[w] != nil {
				cancel()
			}
		})
	}
	wg.Wait()
	if err := firstError(ctx, errs); err != nil {
		return 0, err
	}
	var total float64
	for _, s := range sums {
		total += s
	}
	if math.IsInf(total, 0) {
		return 0, fmt.Errorf("norm overflows: %w", ErrNotFinite)
	}
	return total, nil
}

// firstError prefers a worker's own error to the cancellation it caused in
// the others.
func firstError(ctx context.Context, errs []error) error {
	var canceled error
	for _, err := range errs {
		switch {
		case err == nil:
		case errors.Is(err, context.Canceled) && ctx.Err() != nil:
			canceled = err
		default:
			return err
		}
	}
	return canceled
}

// workerSeeds returns one ChaCha8 seed per worker: from crypto/rand, or
// derived from a test's fixed seed. Without noise no seed is needed.
func workerSeeds(workers int, noise bool, fixed *[32]byte) ([][32]byte, error) {
	if !noise {
		return make([][32]byte, workers), nil
	}
	seeds := make([][32]byte, workers)
	var master *rand.ChaCha8
	if fixed != nil {
		master = rand.NewChaCha8(*fixed)
	}
	for w := range seeds {
		var err error
		if master != nil {
			_, err = master.Read(seeds[w][:])
		} else {
			_, err = crand.Read(seeds[w][:])
		}
		if err != nil {
			return nil, fmt.Errorf("seed noise generator: %w", err)
		}
	}
	return seeds, nil
}

// write is the second pass: every block is transformed by its worker and
// written to dst in order. Each worker owns two output buffers that travel
// to the writer (this goroutine) and back, so memory stays fixed.
func (u *updater) write(ctx context.Context, dst io.Writer, seeds [][32]byte) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	outs := make([]chan []byte, u.workers)
	frees := make([]chan []byte, u.workers)
	errs := make([]error, u.workers)
	bufBytes := u.blockElems * int64(u.maxES)
	for w := range u.workers {
		outs[w] = make(chan []byte, 1)
		frees[w] = make(chan []byte, 2)
		frees[w] <- make([]byte, bufBytes)
		frees[w] <- make([]byte, bufBytes)
	}
	var wg sync.WaitGroup
	for w := range u.workers {
		wg.Go(func() {
			defer close(outs[w])
			errs[w] = u.transform(ctx, w, seeds[w], outs[w], frees[w])
			if errs[w] != nil {
				cancel()
			}
		})
	}
	var werr error
	// Block i comes from worker i mod workers; a worker that closes its
	// channel has no more blocks (or failed), so nothing follows.
	for w := 0; ; w = (w + 1) % u.workers {
		buf, ok := <-outs[w]
		if !ok {
			break
		}
		if _, err := dst.Write(buf); err != nil {
			werr = err
			break
		}
		frees[w] <- buf[:cap(buf)]
	}
	cancel()
	wg.Wait()
	if werr != nil {
		return werr
	}
	return firstError(ctx, errs)
}

// transform produces worker w's output blocks: (local − global)·scale plus
// noise, encoded in the tensor's dtype.
func (u *updater) transform(ctx context.Context, w int, seed [32]byte, out chan<- []byte, free <-chan []byte) error {
	rng := rand.New(rand.NewChaCha8(seed))
	s := u.newScratch()
	scale, sigma := u.scale, u.sigma
	return u.eachBlock(w, func(b block) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := u.pairs[b.pair]
		if p.fixed {
			var buf []byte
			select {
			case buf = <-free:
			case <-ctx.Done():
				return ctx.Err()
			}
			buf = buf[:b.n*int64(p.es)]
			clear(buf) // a zero update: every supported dtype encodes 0 as zero bytes
			select {
			case out <- buf:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		gv, lv, err := u.load(s, b)
		if err != nil {
			return err
		}
		if sigma > 0 {
			for i, l := range lv {
				lv[i] = (l-gv[i])*scale + sigma*rng.NormFloat64()
			}
		} else {
			for i, l := range lv {
				lv[i] = (l - gv[i]) * scale
			}
		}
		var buf []byte
		select {
		case buf = <-free:
		case <-ctx.Done():
			return ctx.Err()
		}
		buf = buf[:b.n*int64(p.es)]
		if err := safetensors.EncodeFloats(p.g.DType, lv, buf); err != nil {
			return fmt.Errorf("tensor %q: %w", p.g.Name, err)
		}
		select {
		case out <- buf:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
}

// writeAtomic writes path through fn into a temporary file in the same
// directory, syncs it and renames it into place; on failure nothing is left.
func writeAtomic(path string, fn func(io.Writer) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err = fn(f); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
