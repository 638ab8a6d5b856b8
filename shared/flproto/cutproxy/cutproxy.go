// Package cutproxy is a loopback TCP proxy that cuts every connection it
// carries once a given number of bytes has passed, a given number of times:
// the network failure that resumable transfers are tested and benchmarked
// against.
package cutproxy

import (
	"fmt"
	"net"
	"sync"
)

// Proxy forwards connections from its loopback listener to a target
// address. It is safe for concurrent use.
type Proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	every   int64 // cut after this many bytes (both directions); 0: never
	left    int   // cuts still to make
	counted int64 // bytes since the last cut
	cuts    int
	conns   map[net.Conn]struct{}
	closed  bool

	wg sync.WaitGroup // the accept loop and every connection's copiers
}

// New starts a proxy on 127.0.0.1 in front of target ("host:port").
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("cut proxy: %w", err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.accept)
	return p, nil
}

// Addr is the proxy's "host:port".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL is "http://" + Addr().
func (p *Proxy) URL() string { return "http://" + p.Addr() }

// CutEvery makes the proxy cut all open connections each time every more
// bytes have passed through it, times times in all.
func (p *Proxy) CutEvery(every int64, times int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.every, p.left, p.counted = every, times, 0
}

// Cuts is how many times the proxy has cut its connections.
func (p *Proxy) Cuts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cuts
}

// Close stops the proxy, closes every connection and waits for its
// goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			client.Close()
			server.Close()
			return
		}
		p.conns[client], p.conns[server] = struct{}{}, struct{}{}
		p.mu.Unlock()
		done := make(chan struct{}, 2)
		pipe := func(dst, src net.Conn) {
			defer func() { done <- struct{}{} }()
			p.copy(dst, src)
			// Half-close so the other side sees the end; a cut closes both.
			if tc, ok := dst.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
		}
		p.wg.Go(func() { pipe(server, client) })
		p.wg.Go(func() { pipe(client, server) })
		p.wg.Go(func() {
			<-done
			<-done
			p.mu.Lock()
			delete(p.conns, client)
			delete(p.conns, server)
			p.mu.Unlock()
			client.Close()
			server.Close()
		})
	}
}

// copy moves bytes from src to dst, counting them, and cuts every open
// connection when the count says so.
func (p *Proxy) copy(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			send := n
			cut := false
			p.mu.Lock()
			if p.every > 0 && p.left > 0 && p.counted+int64(n) >= p.every {
				send = int(p.every - p.counted)
				cut = true
			} else {
				p.counted += int64(n)
			}
			p.mu.Unlock()
			if send > 0 {
				if _, werr := dst.Write(buf[:send]); werr != nil {
					return
				}
			}
			if cut {
				p.cutAll()
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// cutAll closes every open connection (with a reset, where it can) and
// counts one cut.
func (p *Proxy) cutAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.left <= 0 {
		return
	}
	p.left--
	p.cuts++
	p.counted = 0
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
	}
}
