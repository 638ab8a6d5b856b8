// Command probe is the job of the docker runner's tests. Its first argument
// says what to do:
//
//	probe HOST:PORT...  report what the sandbox allows to /flip/output/report.json
//	log CODE            print lines on stdout and stderr, then exit with CODE
//	sleep               sleep for five minutes
//	oom                 allocate memory until the kernel kills it
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Report is what the probe found; an empty error string means the action
// succeeded.
type Report struct {
	Status     map[string]string `json:"status"`
	Dial       map[string]string `json:"dial"`
	Write      map[string]string `json:"write"`
	ReadInput  string            `json:"read_input"`
	TmpSmall   string            `json:"tmp_small"`
	TmpLarge   string            `json:"tmp_large"`
	DockerSock bool              `json:"docker_sock"`
	Mounts     map[string]string `json:"mounts"` // mount point → options
	Env        []string          `json:"env"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: probe probe|log|sleep|oom")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "probe":
		if err := probe(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	case "log":
		code, _ := strconv.Atoi(os.Args[2])
		fmt.Println("stdout line 1")
		fmt.Fprintln(os.Stderr, "stderr line 1")
		fmt.Print("stdout line 2 without newline")
		os.Exit(code)
	case "sleep":
		fmt.Println("sleeping")
		time.Sleep(5 * time.Minute)
	case "oom":
		var keep [][]byte
		for {
			b := make([]byte, 8<<20)
			for i := range b {
				b[i] = 1
			}
			keep = append(keep, b)
		}
	}
}

func probe(addrs []string) error {
	r := Report{Status: map[string]string{}, Dial: map[string]string{}, Write: map[string]string{}}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok {
			r.Status[k] = strings.TrimSpace(v)
		}
	}
	_ = f.Close()
	for _, a := range addrs {
		c, err := net.DialTimeout("tcp", a, 2*time.Second)
		r.Dial[a] = errText(err)
		if err == nil {
			_ = c.Close()
		}
	}
	for _, p := range []string{"/probe-file", "/flip/input/probe-file", "/etc/probe-file", "/etc/hosts", "/flip/output/probe-file"} {
		r.Write[p] = errText(write(p, 16))
	}
	_, err = os.ReadFile("/flip/input/task.json")
	r.ReadInput = errText(err)
	r.TmpSmall = errText(write("/tmp/small", 64<<10))
	r.TmpLarge = errText(write("/tmp/large", 8<<20))
	_, err = os.Stat("/var/run/docker.sock")
	r.DockerSock = !errors.Is(err, os.ErrNotExist)
	r.Env = os.Environ()
	r.Mounts = map[string]string{}
	if b, err := os.ReadFile("/proc/self/mounts"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 4 {
				r.Mounts[f[1]] = f[3]
			}
		}
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return os.WriteFile("/flip/output/report.json", b, 0o644)
}

func write(path string, n int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(make([]byte, n))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
