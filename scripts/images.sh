#!/usr/bin/env bash
# make images: builds the trust node's images from the repository root.
#
#   scripts/images.sh [NAME...]    NAME: trust-api data-access-api imaging-api fl-client dev-hub dev-omop-db dev-orthanc
#
# By default the base images are the local stand-ins of
# scripts/base-images.sh (built once, without pulling); IMAGES_BASES=public
# uses the public ones (golang:1.26-bookworm, gcr.io/distroless/*,
# debian:bookworm-slim) for a host that can pull. Images are tagged
# ${FLIP_IMAGE_PREFIX:-flip-trust/}NAME:${FLIP_IMAGE_TAG:-local}. The
# Docker build cache makes a rebuild of unchanged sources take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=${FLIP_IMAGE_PREFIX:-flip-trust/}
TAG=${FLIP_IMAGE_TAG:-local}
VERSION=${FLIP_RELEASE:-0.1.0-dev}
all=(trust-api data-access-api imaging-api fl-client dev-hub dev-omop-db dev-orthanc)
names=("$@")
((${#names[@]})) || names=("${all[@]}")

if [[ ${IMAGES_BASES:-local} == public ]]; then
	GO_IMAGE=golang:1.26-bookworm DEBIAN_IMAGE=debian:bookworm-slim
	STATIC_IMAGE=gcr.io/distroless/static-debian12:nonroot BASE_IMAGE=gcr.io/distroless/base-debian12:nonroot
else
	eval "$(bash scripts/base-images.sh)"
fi

# The legacy builder (no BuildKit here) warns on every build; keep errors.
quiet() { grep -v -e '^DEPRECATED: The legacy builder' -e 'Install the buildx component' -e 'docs.docker.com/go/buildx' >&2 || true; }

for n in "${names[@]}"; do
	case $n in
	trust-api | imaging-api | dev-hub) df=services/$n/Dockerfile runtime=$STATIC_IMAGE ;;
	data-access-api | fl-client) df=services/$n/Dockerfile runtime=$BASE_IMAGE ;;
	dev-omop-db) df=compose/dev/omop-db/Dockerfile runtime= ;;
	dev-orthanc) df=compose/dev/orthanc/Dockerfile runtime= ;;
	*) echo "images: unknown image $n (one of: ${all[*]})" >&2; exit 2 ;;
	esac
	start=$(date +%s)
	args=(--build-arg GO_IMAGE="$GO_IMAGE" --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" --build-arg VERSION="$VERSION")
	[[ -n $runtime ]] && args+=(--build-arg RUNTIME_IMAGE="$runtime")
	docker build -q -f "$df" "${args[@]}" -t "$PREFIX$n:$TAG" . > /dev/null 2> >(quiet) || { echo "images: $n failed" >&2; exit 1; }
	size=$(docker image inspect -f '{{.Size}}' "$PREFIX$n:$TAG")
	printf 'images: %-40s %6.1f MB  %4ss\n' "$PREFIX$n:$TAG" "$(awk -v s="$size" 'BEGIN{print s/1e6}')" "$(($(date +%s) - start))"
done
