package delivery

import (
	"net"
	"net/url"
)

// listenOn binds the host:port of a closed test server's URL again.
func listenOn(raw string) (net.Listener, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	return net.Listen("tcp", u.Host)
}
