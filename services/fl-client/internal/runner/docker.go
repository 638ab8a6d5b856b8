package runner

// The Docker Engine client is github.com/moby/moby/client, the maintained
// successor of github.com/docker/docker/client. Its API-version negotiation
// goes down to API 1.40 (client.MinAPIVersion), so it drives Docker Engine
// 20.10 (API 1.41) and newer engines alike.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"

	"github.com/flip-trust/node/services/fl-client/internal/contract"
)

// Labels on every job container.
const (
	// LabelOwner names the fl-client instance that owns the container
	// (DockerConfig.Instance); Cleanup removes containers by it.
	LabelOwner = "org.flip.fl-client"
	// LabelTask is the task id.
	LabelTask = "org.flip.task"
)

// Engine is the part of the Docker Engine API the docker runner uses;
// *client.Client implements it. Its methods are safe for concurrent use.
type Engine interface {
	ImageInspect(ctx context.Context, image string, opts ...client.ImageInspectOption) (client.ImageInspectResult, error)
	ContainerCreate(ctx context.Context, opts client.ContainerCreateOptions) (client.ContainerCreateResult, error)
	ContainerStart(ctx context.Context, id string, opts client.ContainerStartOptions) (client.ContainerStartResult, error)
	ContainerWait(ctx context.Context, id string, opts client.ContainerWaitOptions) client.ContainerWaitResult
	ContainerAttach(ctx context.Context, id string, opts client.ContainerAttachOptions) (client.ContainerAttachResult, error)
	ContainerKill(ctx context.Context, id string, opts client.ContainerKillOptions) (client.ContainerKillResult, error)
	ContainerInspect(ctx context.Context, id string, opts client.ContainerInspectOptions) (client.ContainerInspectResult, error)
	ContainerRemove(ctx context.Context, id string, opts client.ContainerRemoveOptions) (client.ContainerRemoveResult, error)
	ContainerList(ctx context.Context, opts client.ContainerListOptions) (client.ContainerListResult, error)
}

var _ Engine = (*client.Client)(nil)

// ConnectEngine returns a client of the Docker Engine at host ("" for the
// default, unix:///var/run/docker.sock) that has negotiated its API version
// with the engine. It fails when the engine cannot be reached.
func ConnectEngine(ctx context.Context, host string) (*client.Client, error) {
	opts := []client.Opt{}
	if host != "" {
		opts = append(opts, client.WithHost(host))
	}
	c, err := client.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker client for %q: %w", host, err)
	}
	if _, err := c.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("reach docker engine %q: %w", host, err)
	}
	return c, nil
}

// DockerConfig configures the docker runner.
type DockerConfig struct {
	// Allowlist holds the images jobs may run: "repo@sha256:<hex>" or bare
	// "sha256:<hex>" (an image id or manifest digest).
	Allowlist []string
	// User is the numeric "uid:gid" jobs run as when fl-client runs as root
	// (default "65534:65534"). When fl-client is not root, jobs run as
	// fl-client's own uid and gid so that it can read what they write.
	User string
	// Instance is the value of the LabelOwner label (default "fl-client");
	// fl-client processes sharing one engine need different instances.
	Instance string
	// PidsLimit bounds the job's processes (default 1024).
	PidsLimit int64
	// TmpfsBytes is the size of the job's /tmp (default 64 MiB).
	TmpfsBytes int64
	// ShmBytes is the size of /dev/shm (0: the engine's default, 64 MiB).
	ShmBytes int64
	// StopTimeout bounds the engine calls made after a job has ended or was
	// stopped: kill, inspect, remove (default 30 s).
	StopTimeout time.Duration
}

// Docker runs a job in a container pinned by digest, in a sandbox: no
// network, a read-only root filesystem, every capability dropped,
// no-new-privileges, a non-root user, memory (without swap), CPU and
// process limits, a small noexec /tmp, the input directory read-only at
// /flip/input and the output directory writable at /flip/output, the chosen
// GPUs only, and no environment but the contract's. The container is always
// removed after the job.
type Docker struct {
	engine   Engine
	cfg      DockerConfig
	allow    Allowlist
	uid, gid int
	chown    bool
	logger   *slog.Logger
}

var _ Runner = (*Docker)(nil)

// NewDocker returns a docker runner over engine. Every bad setting is
// reported.
func NewDocker(engine Engine, cfg DockerConfig, logger *slog.Logger) (*Docker, error) {
	if cfg.User == "" {
		cfg.User = "65534:65534"
	}
	if cfg.Instance == "" {
		cfg.Instance = "fl-client"
	}
	if cfg.PidsLimit <= 0 {
		cfg.PidsLimit = 1024
	}
	if cfg.TmpfsBytes <= 0 {
		cfg.TmpfsBytes = 64 << 20
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 30 * time.Second
	}
	var errs []error
	allow, err := ParseAllowlist(cfg.Allowlist)
	if err != nil {
		errs = append(errs, err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	d := &Docker{engine: engine, cfg: cfg, allow: allow, logger: logger}
	if os.Geteuid() == 0 {
		d.uid, d.gid, err = parseUser(cfg.User)
		if err != nil {
			errs = append(errs, err)
		}
		d.chown = true
	} else {
		d.uid, d.gid = os.Geteuid(), os.Getegid()
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("docker runner: %w", err)
	}
	return d, nil
}

func parseUser(s string) (uid, gid int, err error) {
	u, g, ok := strings.Cut(s, ":")
	uid, uerr := strconv.Atoi(u)
	gid, gerr := strconv.Atoi(g)
	if !ok || uerr != nil || gerr != nil || uid <= 0 || gid <= 0 {
		return 0, 0, fmt.Errorf("job user %q: want numeric non-root uid:gid", s)
	}
	return uid, gid, nil
}

// Run runs spec.Image to its end (see Runner).
func (d *Docker) Run(ctx context.Context, spec Spec) (Outcome, error) {
	ws := spec.Workspace
	if ws.Input == "" || ws.Output == "" {
		return Outcome{}, fmt.Errorf("task %s: no workspace: %w", spec.TaskID, ErrInvalidSpec)
	}
	for _, g := range spec.GPUs {
		if g == "" || strings.ContainsAny(g, ", ") {
			return Outcome{}, fmt.Errorf("task %s: GPU id %q: %w", spec.TaskID, g, ErrInvalidSpec)
		}
	}
	imageID, err := d.resolve(ctx, spec.Image)
	if err != nil {
		return Outcome{}, fmt.Errorf("task %s: %w", spec.TaskID, err)
	}
	if d.chown {
		for _, dir := range []string{ws.Input, ws.Output} {
			if err := chownTree(dir, d.uid, d.gid); err != nil {
				return Outcome{}, fmt.Errorf("task %s: give the job its workspace: %w", spec.TaskID, err)
			}
		}
	}

	created, err := d.engine.ContainerCreate(ctx, d.createOptions(spec, imageID))
	if err != nil {
		return Outcome{}, fmt.Errorf("task %s: create container: %w", spec.TaskID, err)
	}
	id := created.ID
	// Engine calls after the job ends must run even when ctx is done.
	after := context.WithoutCancel(ctx)
	defer func() {
		rctx, cancel := context.WithTimeout(after, d.cfg.StopTimeout)
		defer cancel()
		if _, err := d.engine.ContainerRemove(rctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
			d.logger.Warn("remove job container", "task", spec.TaskID, "container", shortID(id), "err", err)
		}
	}()

	// runCtx ends the job: at its timeout, or when ctx is done. Cancelling
	// it on return also ends the engine's wait call.
	runCtx, cancelRun := context.WithCancel(ctx)
	if spec.Timeout > 0 {
		runCtx, cancelRun = context.WithTimeout(ctx, spec.Timeout)
	}
	defer cancelRun()

	// Attach to the output and wait for the next exit before starting, so
	// that neither a line nor the exit is missed.
	sink := newLogSink(spec.Log)
	logsDone, err := d.streamLogs(runCtx, id, sink)
	if err != nil {
		return Outcome{}, fmt.Errorf("task %s: attach to container: %w", spec.TaskID, err)
	}
	wait := d.engine.ContainerWait(runCtx, id, client.ContainerWaitOptions{Condition: container.WaitConditionNextExit})
	if _, err := d.engine.ContainerStart(runCtx, id, client.ContainerStartOptions{}); err != nil {
		logsDone()
		if ctx.Err() != nil {
			return Outcome{}, fmt.Errorf("task %s: job stopped: %w", spec.TaskID, ctx.Err())
		}
		if runCtx.Err() != nil {
			// The job's time ran out while the engine was starting it.
			d.kill(after, id)
			return Classify(Exit{Code: -1, TimedOut: true, Timeout: spec.Timeout}), nil
		}
		return Outcome{}, fmt.Errorf("task %s: start container: %w", spec.TaskID, err)
	}

	var waitErr error
	select {
	case <-wait.Result:
	case waitErr = <-wait.Error:
	}
	// A wait that ended without a result was cut short by the timeout or
	// by ctx, or failed: in every case the job must stop now.
	timedOut := waitErr != nil && runCtx.Err() != nil && ctx.Err() == nil
	if waitErr != nil {
		d.kill(after, id)
	}
	logsDone()
	if waitErr != nil && runCtx.Err() == nil {
		return Outcome{}, fmt.Errorf("task %s: wait for container: %w", spec.TaskID, waitErr)
	}
	if ctx.Err() != nil {
		return Outcome{}, fmt.Errorf("task %s: job stopped: %w", spec.TaskID, ctx.Err())
	}

	ictx, cancel := context.WithTimeout(after, d.cfg.StopTimeout)
	defer cancel()
	info, err := d.engine.ContainerInspect(ictx, id, client.ContainerInspectOptions{})
	if err != nil {
		return Outcome{}, fmt.Errorf("task %s: inspect container: %w", spec.TaskID, err)
	}
	st := info.Container.State
	if st == nil {
		return Outcome{}, fmt.Errorf("task %s: inspect container: no state", spec.TaskID)
	}
	return Classify(Exit{
		Code:          st.ExitCode,
		OOMKilled:     st.OOMKilled,
		MemoryLimited: spec.MemoryBytes > 0,
		TimedOut:      timedOut,
		Timeout:       spec.Timeout,
		LogOOM:        sink.sawOOM(),
	}), nil
}

// resolve checks image against the allowlist and the local image store and
// returns the local image's id, which is what the container is created from.
// Nothing is pulled.
func (d *Docker) resolve(ctx context.Context, image string) (string, error) {
	ref, err := parsePinned(image)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrImageNotAllowed, err)
	}
	if !d.allow.allows(ref) {
		return "", fmt.Errorf("%w: %s is not in the site's allowlist", ErrImageNotAllowed, ref)
	}
	info, err := d.engine.ImageInspect(ctx, ref.String())
	if cerrdefs.IsNotFound(err) && ref.name != "" {
		// A locally built image has no repository digest: its id is the pin.
		info, err = d.engine.ImageInspect(ctx, ref.digest)
	}
	if cerrdefs.IsNotFound(err) {
		return "", fmt.Errorf("%w: %s", ErrImageNotFound, ref)
	}
	if err != nil {
		return "", fmt.Errorf("inspect image %s: %w", ref, err)
	}
	if !ref.matchesLocal(info.ID, info.RepoDigests) {
		return "", fmt.Errorf("%w: the local image %s does not match %s", ErrImageNotAllowed, shortID(info.ID), ref)
	}
	return info.ID, nil
}

func (d *Docker) createOptions(spec Spec, imageID string) client.ContainerCreateOptions {
	env := make(map[string]string, len(spec.Env)+3)
	for k, v := range spec.Env {
		env[k] = v
	}
	env[contract.EnvInput] = contract.ContainerInput
	env[contract.EnvOutput] = contract.ContainerOutput
	// "void" hides every GPU even from images whose own environment asks
	// for all of them (CUDA base images set NVIDIA_VISIBLE_DEVICES=all).
	env[contract.EnvNVIDIA] = "void"
	delete(env, contract.EnvCUDA)
	var devices []container.DeviceRequest
	if len(spec.GPUs) > 0 {
		env[contract.EnvNVIDIA] = strings.Join(spec.GPUs, ",")
		devices = []container.DeviceRequest{{
			Driver:       "nvidia",
			DeviceIDs:    spec.GPUs,
			Capabilities: [][]string{{"gpu"}},
		}}
	}
	envList := make([]string, 0, len(env))
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}

	pids := d.cfg.PidsLimit
	res := container.Resources{
		NanoCPUs:       spec.NanoCPUs,
		PidsLimit:      &pids,
		DeviceRequests: devices,
	}
	if spec.MemoryBytes > 0 {
		res.Memory, res.MemorySwap = spec.MemoryBytes, spec.MemoryBytes
	}
	return client.ContainerCreateOptions{
		Config: &container.Config{
			Image:           imageID,
			Cmd:             spec.Command,
			Env:             envList,
			User:            strconv.Itoa(d.uid) + ":" + strconv.Itoa(d.gid),
			NetworkDisabled: true,
			Labels:          map[string]string{LabelOwner: d.cfg.Instance, LabelTask: spec.TaskID},
		},
		HostConfig: &container.HostConfig{
			NetworkMode:    "none",
			ReadonlyRootfs: true,
			CapDrop:        []string{"ALL"},
			SecurityOpt:    []string{"no-new-privileges"},
			IpcMode:        container.IPCModePrivate,
			ShmSize:        d.cfg.ShmBytes,
			Resources:      res,
			Tmpfs:          map[string]string{"/tmp": "rw,noexec,nosuid,nodev,size=" + strconv.FormatInt(d.cfg.TmpfsBytes, 10)},
			Mounts: []mount.Mount{
				{Type: mount.TypeBind, Source: spec.Workspace.Input, Target: contract.ContainerInput, ReadOnly: true},
				{Type: mount.TypeBind, Source: spec.Workspace.Output, Target: contract.ContainerOutput},
			},
			// The job's output goes to fl-client through the attached streams
			// only: the engine keeps no copy of it on disk.
			LogConfig: container.LogConfig{Type: "none"},
		},
	}
}

// streamLogs attaches to the container's stdout and stderr and copies them
// into sink until the container stops. The returned function waits for the
// copy to end (a little while after the container stopped, then it cuts it
// short) and flushes the last lines; it must be called once.
func (d *Docker) streamLogs(ctx context.Context, id string, sink *logSink) (func(), error) {
	att, err := d.engine.ContainerAttach(ctx, id, client.ContainerAttachOptions{Stream: true, Stdout: true, Stderr: true})
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	stdout, stderr := sink.stream(), sink.stream()
	go func() {
		defer close(done)
		if _, err := stdcopy.StdCopy(stdout, stderr, att.Reader); err != nil && !errors.Is(err, net.ErrClosed) {
			d.logger.Warn("stream job output", "container", shortID(id), "err", err)
		}
	}()
	return func() {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		att.Close()
		<-done
		stdout.Flush()
		stderr.Flush()
	}, nil
}

// kill stops the container at once; one already stopped is not an error.
func (d *Docker) kill(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.StopTimeout)
	defer cancel()
	if _, err := d.engine.ContainerKill(ctx, id, client.ContainerKillOptions{Signal: "KILL"}); err != nil &&
		!cerrdefs.IsNotFound(err) && !cerrdefs.IsConflict(err) {
		d.logger.Warn("kill job container", "container", shortID(id), "err", err)
	}
}

// Cleanup removes every container of this instance that is left from a
// previous fl-client process (one that crashed with jobs running). Call it
// at startup, before any job runs. It returns how many it removed.
func (d *Docker) Cleanup(ctx context.Context) (int, error) {
	list, err := d.engine.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: make(client.Filters).Add("label", LabelOwner+"="+d.cfg.Instance),
	})
	if err != nil {
		return 0, fmt.Errorf("list job containers: %w", err)
	}
	var (
		n    int
		errs []error
	)
	for _, c := range list.Items {
		_, err := d.engine.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		switch {
		case err == nil:
			n++
			d.logger.Info("removed a leftover job container", "container", shortID(c.ID), "task", c.Labels[LabelTask])
		case cerrdefs.IsNotFound(err):
		default:
			errs = append(errs, fmt.Errorf("remove job container %s: %w", shortID(c.ID), err))
		}
	}
	return n, errors.Join(errs...)
}

// chownTree gives dir and everything in it to uid:gid.
func chownTree(dir string, uid, gid int) error {
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
	if err != nil {
		return fmt.Errorf("chown %s: %w", filepath.Base(dir), err)
	}
	return nil
}

func shortID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
