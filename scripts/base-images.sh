#!/usr/bin/env bash
# Builds the local base images that stand in for the public ones on a build
# host that cannot pull from a registry (CI here, a TRE's build host), without
# pulling anything:
#
#   flip-local/debian:bookworm              Debian 12 minbase made by debootstrap (+ ca-certificates, tzdata)
#   flip-local/golang:<go>-bookworm         for golang:1.26-bookworm: that Debian, gcc, this host's Go toolchain and CA bundle
#   flip-local/static-debian12:nonroot      for gcr.io/distroless/static-debian12:nonroot
#   flip-local/base-debian12:nonroot        for gcr.io/distroless/base-debian12:nonroot (adds glibc)
#
# An image that already exists is kept (delete it, or set BASE_REBUILD=1, to
# make it again). Needs root (debootstrap), Debian's package archive
# (DEBIAN_MIRROR, default http://deb.debian.org/debian) and Go on the host.
# Prints the four names as shell assignments on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
go_version=$(go env GOVERSION)
DEBIAN_IMAGE=flip-local/debian:bookworm
GO_IMAGE=flip-local/golang:${go_version#go}-bookworm
STATIC_IMAGE=flip-local/static-debian12:nonroot
BASE_IMAGE=flip-local/base-debian12:nonroot

log() { echo "base-images: $*" >&2; }
# The legacy builder (no BuildKit on such hosts) warns on every build; keep errors.
quiet() { grep -v -e '^DEPRECATED: The legacy builder' -e 'Install the buildx component' -e 'docs.docker.com/go/buildx' -e '^$' >&2 || true; }
have() { [[ ${BASE_REBUILD:-0} != 1 ]] && docker image inspect "$1" >/dev/null 2>&1; }

if ! have "$DEBIAN_IMAGE"; then
	command -v debootstrap >/dev/null || { log "debootstrap is missing (apt-get install debootstrap; make deps installs it)"; exit 1; }
	root=$(mktemp -d /tmp/flip-rootfs.XXXXXX)
	trap 'rm -rf "$root"' EXIT
	log "debootstrap bookworm (minbase) from $MIRROR"
	debootstrap --variant=minbase --include=ca-certificates,tzdata bookworm "$root" "$MIRROR" >"$root.log" 2>&1 ||
		{ tail -n 20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
	rm -f "$root.log"
	# Package lists and downloaded packages are not part of a base image.
	rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log "$root"/usr/share/doc/* "$root"/usr/share/man/*
	tar -C "$root" -c . | docker import \
		--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change 'CMD ["/bin/bash"]' - "$DEBIAN_IMAGE" >/dev/null
	rm -rf "$root"; trap - EXIT
	log "built $DEBIAN_IMAGE"
fi

if ! have "$GO_IMAGE"; then
	goroot=$(go env GOROOT)
	log "$GO_IMAGE from $goroot"
	# The context is the Dockerfile plus the toolchain, streamed as a tar.
	tar -C "$goroot/.." --transform "s,^$(basename "$goroot"),go," --exclude="$(basename "$goroot")/test" \
		-cf - "$(basename "$goroot")" -C "$PWD/scripts/base-images" --transform 's,^golang.Dockerfile$,Dockerfile,' golang.Dockerfile \
		-C /etc/ssl/certs ca-certificates.crt |
		docker build -q --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" -t "$GO_IMAGE" - >/dev/null 2> >(quiet)
	log "built $GO_IMAGE"
fi

for t in static base; do
	img=$STATIC_IMAGE; [[ $t == base ]] && img=$BASE_IMAGE
	have "$img" && continue
	docker build -q --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" --target "$t" -t "$img" \
		-f scripts/base-images/runtime.Dockerfile scripts/base-images >/dev/null 2> >(quiet)
	log "built $img"
done

printf 'DEBIAN_IMAGE=%s\nGO_IMAGE=%s\nSTATIC_IMAGE=%s\nBASE_IMAGE=%s\n' "$DEBIAN_IMAGE" "$GO_IMAGE" "$STATIC_IMAGE" "$BASE_IMAGE"
