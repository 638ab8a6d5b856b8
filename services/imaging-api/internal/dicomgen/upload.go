package dicomgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/flip-trust/node/shared/httpx"
)

// UploadTimeout bounds one upload when the Uploader has no client of its own.
const UploadTimeout = 60 * time.Second

var defaultClient = sync.OnceValue(func() *http.Client { return httpx.NewClient(UploadTimeout) })

// Stored is Orthanc's answer to an upload.
type Stored struct {
	// ID is Orthanc's identifier of the instance.
	ID string
	// ParentStudy is Orthanc's identifier of the instance's study.
	ParentStudy string
	// Status is "Success" for a new instance, "AlreadyStored" for a repeat.
	Status string
}

// Uploader posts DICOM files to an Orthanc server's REST API
// (POST /instances).
type Uploader struct {
	// URL is the server's base URL, e.g. http://127.0.0.1:8042.
	URL string
	// User and Password are sent with HTTP basic authentication when User
	// is set.
	User, Password string
	// Client defaults to a shared client with UploadTimeout.
	Client *http.Client
}

// Upload posts one DICOM file to the Orthanc at orthancURL.
func Upload(ctx context.Context, orthancURL, user, pass string, data []byte) error {
	_, err := (&Uploader{URL: orthancURL, User: user, Password: pass}).Upload(ctx, data)
	return err
}

// Upload posts one DICOM file and returns Orthanc's answer.
func (u *Uploader) Upload(ctx context.Context, data []byte) (Stored, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(u.URL, "/")+"/instances", bytes.NewReader(data))
	if err != nil {
		return Stored{}, fmt.Errorf("dicomgen: upload: %w", err)
	}
	req.Header.Set("Content-Type", "application/dicom")
	if u.User != "" {
		req.SetBasicAuth(u.User, u.Password)
	}
	c := u.Client
	if c == nil {
		c = defaultClient()
	}
	resp, err := c.Do(req)
	if err != nil {
		return Stored{}, fmt.Errorf("dicomgen: upload: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Stored{}, fmt.Errorf("dicomgen: upload: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return Stored{}, fmt.Errorf("dicomgen: upload: Orthanc answered %s: %s", resp.Status, firstLine(body))
	}
	var s Stored
	if err := json.Unmarshal(body, &s); err != nil {
		return Stored{}, fmt.Errorf("dicomgen: upload: decode answer: %w", err)
	}
	if s.ID == "" || (s.Status != "Success" && s.Status != "AlreadyStored") {
		return Stored{}, fmt.Errorf("dicomgen: upload: unexpected answer: %s", firstLine(body))
	}
	return s, nil
}

func firstLine(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// Progress counts the work of UploadStudies so far.
type Progress struct {
	// Studies is the number of studies with every instance uploaded.
	Studies int
	// Instances is the number of instances uploaded, AlreadyStored
	// the number of them Orthanc already had.
	Instances, AlreadyStored int
	// Bytes is the size of the uploaded files.
	Bytes int64
}

// UploadStudies generates and uploads every instance of studies with
// concurrency parallel uploads (at least 1). progress, when not nil, is
// called after each instance, never concurrently. The first failure (an
// invalid study, an upload error, ctx ending) stops the run; the returned
// Progress counts what was done until then.
func (u *Uploader) UploadStudies(ctx context.Context, studies iter.Seq[Study], concurrency int, progress func(Progress)) (Progress, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	type job struct {
		inst      Instance
		remaining *int // instances of the study not yet uploaded
	}
	jobs := make(chan job)
	var (
		mu   sync.Mutex
		done Progress
		wg   sync.WaitGroup
	)
	for range max(concurrency, 1) {
		wg.Go(func() {
			for j := range jobs {
				data, err := Encode(j.inst)
				if err != nil {
					cancel(err)
					continue
				}
				s, err := u.Upload(ctx, data)
				if err != nil {
					cancel(err)
					continue
				}
				mu.Lock()
				done.Instances++
				done.Bytes += int64(len(data))
				if s.Status == "AlreadyStored" {
					done.AlreadyStored++
				}
				if *j.remaining--; *j.remaining == 0 {
					done.Studies++
				}
				if progress != nil {
					progress(done)
				}
				mu.Unlock()
			}
		})
	}
	func() {
		defer close(jobs)
		for s := range studies {
			insts, err := s.Instances()
			if err != nil {
				cancel(err)
				return
			}
			remaining := len(insts)
			for _, inst := range insts {
				select {
				case jobs <- job{inst, &remaining}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return done, fmt.Errorf("dicomgen: upload studies: %w", err)
	}
	return done, nil
}
