// Package compose holds the checks that the trust node's Compose files keep
// their security invariants: every service non-root on a read-only root
// filesystem with no capabilities and no privilege escalation, with a
// healthcheck and a restart policy; only fl-client reaches the Docker Engine;
// ports published on loopback only; keys given as files; GPUs reserved for
// fl-client alone. The tests load every file with compose-go, the loader
// Docker Compose v2 uses, and with docker-compose v1 where it is installed.
package compose
