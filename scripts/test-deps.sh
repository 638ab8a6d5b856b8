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
# imaging-api's integration tests start their own PACS and staging Orthanc;
# dcmtk's dcmdump checks the synthetic DICOM files
orthanc_new=
[[ -x /usr/sbin/Orthanc ]] || command -v Orthanc >/dev/null || { need+=(orthanc); orthanc_new=1; }
command -v dcmdump >/dev/null || need+=(dcmtk)
# imaging-api converts DICOM to NIfTI for FL jobs with dcm2niix
command -v dcm2niix >/dev/null || need+=(dcm2niix)
# make e2e-compose builds the images (debootstrap makes the local base
# images) and runs the compose files on the Docker Engine
command -v debootstrap >/dev/null || [[ -x /usr/sbin/debootstrap ]] || need+=(debootstrap)
command -v docker >/dev/null || need+=(docker.io)
command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || need+=(docker-compose)

if ((${#need[@]})); then
	if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
	echo "test-deps: installing ${need[*]}"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
	if [[ -n $orthanc_new ]]; then
		# The package enables and starts a system Orthanc (ports 8042 and 4242)
		# unless policy-rc.d forbids it. Tests run their own, so switch it off;
		# failures here (no init system, service already stopped) are harmless.
		if [[ -d /run/systemd/system ]]; then
			$SUDO systemctl disable --now orthanc >/dev/null 2>&1 || true
		else
			$SUDO update-rc.d orthanc disable >/dev/null 2>&1 || true
			$SUDO invoke-rc.d orthanc stop >/dev/null 2>&1 || $SUDO /etc/init.d/orthanc stop >/dev/null 2>&1 || true
		fi
	fi
fi
echo "test-deps: ok (go $(go env GOVERSION))"
