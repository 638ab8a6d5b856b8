#!/usr/bin/env bash
# make bundle: saves the trust node's service images into one tarball with a
# SHA-256 manifest, for hosts that take images through an airlock rather
# than from a registry (a TRE). scripts/load-bundle.sh verifies and loads it.
#
#   scripts/bundle.sh [OUT_DIR]     (default bin/bundle)
#
# OUT_DIR gets flip-trust-images.tar, images.txt (each image's name and ID)
# and SHA256SUMS over both. BUNDLE_IMAGES overrides the image list.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bin/bundle}
PREFIX=${FLIP_IMAGE_PREFIX:-flip-trust/}
TAG=${FLIP_IMAGE_TAG:-local}
read -r -a images <<<"${BUNDLE_IMAGES:-${PREFIX}trust-api:$TAG ${PREFIX}data-access-api:$TAG ${PREFIX}imaging-api:$TAG ${PREFIX}fl-client:$TAG}"
mkdir -p "$out"
rm -f "$out/flip-trust-images.tar" "$out/images.txt" "$out/SHA256SUMS"
for i in "${images[@]}"; do
	id=$(docker image inspect -f '{{.Id}}' "$i") || { echo "bundle: $i is not built (make images)" >&2; exit 1; }
	echo "$i $id" >>"$out/images.txt"
done
docker save -o "$out/flip-trust-images.tar" "${images[@]}"
(cd "$out" && sha256sum flip-trust-images.tar images.txt >SHA256SUMS)
echo "bundle: $out/flip-trust-images.tar ($(du -h "$out/flip-trust-images.tar" | cut -f1), ${#images[@]} images); manifest $out/SHA256SUMS:"
sed 's/^/  /' "$out/SHA256SUMS"
