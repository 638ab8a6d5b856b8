#!/usr/bin/env bash
# Installs what `make test` needs on a fresh Debian machine. Idempotent: a
# package already present is not reinstalled, and apt-get update runs at most
# once per invocation.
set -euo pipefail

need=()
command -v go >/dev/null || { echo "test-deps: Go is required (https://go.dev/dl)"; exit 1; }
command -v git >/dev/null || need+=(git)
command -v curl >/dev/null || need+=(curl)
command -v jq >/dev/null || need+=(jq)
command -v gcc >/dev/null || need+=(gcc libc6-dev) # the race detector and the SQL parser need cgo
# data-access-api's integration tests start their own PostgreSQL cluster
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql postgresql-contrib)

if ((${#need[@]})); then
	if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
	echo "test-deps: installing ${need[*]}"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
echo "test-deps: ok (go $(go env GOVERSION))"
