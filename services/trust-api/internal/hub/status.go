package hub

import (
	"log/slog"
	"sync"

	"github.com/flip-trust/node/shared/hubapi"
)

// StatusView is what /health reports about the hub.
type StatusView struct {
	HubVersion     *string `json:"hub_version"`
	KeyMatch       *bool   `json:"hub_key_match"`
	KeyFingerprint *string `json:"hub_key_fingerprint"`
}

// Status keeps what the last accepted heartbeat said about the hub: its
// build identity and whether its AES key fingerprint matches ours. A missing
// fingerprint (an older hub) or an unknown own fingerprint leaves the match
// unknown; a mismatch is warned about once per process. Safe for concurrent use.
type Status struct {
	own    string
	logger *slog.Logger

	mu     sync.Mutex
	view   StatusView
	warned bool
}

func newStatus(own string, logger *slog.Logger) *Status {
	if own == "" {
		logger.Error("own AES key fingerprint unknown: the hub key check is disabled")
	}
	return &Status{own: own, logger: logger}
}

// Record stores a heartbeat reply.
func (s *Status) Record(rep hubapi.HeartbeatReply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.view = StatusView{HubVersion: rep.HubVersion, KeyFingerprint: rep.AESKeyFingerprint}
	if rep.AESKeyFingerprint == nil || s.own == "" {
		return
	}
	match := *rep.AESKeyFingerprint == s.own
	s.view.KeyMatch = &match
	if !match && !s.warned {
		s.warned = true
		s.logger.Warn("The hub's AES key differs from this trust's AES_KEY_BASE64: payloads will fail authentication. Refresh the Hub-shared block of this trust's kit.",
			"hub_fingerprint", *rep.AESKeyFingerprint, "own_fingerprint", s.own)
	}
}

// Forget clears the record after a failed or rejected heartbeat.
func (s *Status) Forget() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.view = StatusView{}
}

// Current returns the recorded view.
func (s *Status) Current() StatusView {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.view
}
