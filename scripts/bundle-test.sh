#!/usr/bin/env bash
# make bundle-test: a bundle loads when intact and is refused, with nothing
# loaded, when its tarball or its image list was altered. Uses a small image
# so that it runs in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
img=${BUNDLE_TEST_IMAGE:-flip-local/static-debian12:nonroot}
docker image inspect "$img" >/dev/null 2>&1 || eval "$(bash scripts/base-images.sh)"
work=$(mktemp -d /tmp/flip-bundle-test.XXXXXX)
trap 'rm -rf "$work"; docker rmi -f flip-bundle-test/probe:1 >/dev/null 2>&1 || true' EXIT
docker tag "$img" flip-bundle-test/probe:1
BUNDLE_IMAGES=flip-bundle-test/probe:1 bash scripts/bundle.sh "$work/good" >/dev/null
fail=0
bash scripts/load-bundle.sh "$work/good" >/dev/null 2>&1 || { echo "bundle-test: an intact bundle was refused"; fail=1; }

# One byte of the tarball changed.
cp -r "$work/good" "$work/tar"
size=$(stat -c %s "$work/tar/flip-trust-images.tar")
printf '\x01' | dd of="$work/tar/flip-trust-images.tar" bs=1 seek=$((size / 2)) conv=notrunc status=none
# The image list pointing at another image ID.
cp -r "$work/good" "$work/list"
sed -i 's/sha256:./sha256:0/' "$work/list/images.txt"
# The manifest rewritten to match a tampered tarball, caught by the published digest.
cp -r "$work/tar" "$work/manifest"
(cd "$work/manifest" && sha256sum flip-trust-images.tar images.txt >SHA256SUMS)
expected=$(sha256sum "$work/good/SHA256SUMS" | cut -d' ' -f1)

docker rmi -f flip-bundle-test/probe:1 >/dev/null
for case in tar list manifest; do
	if EXPECTED_MANIFEST_SHA256=$expected bash scripts/load-bundle.sh "$work/$case" >"$work/$case.log" 2>&1; then
		echo "bundle-test: the tampered bundle ($case) was loaded"; fail=1
	elif docker image inspect flip-bundle-test/probe:1 >/dev/null 2>&1; then
		echo "bundle-test: the tampered bundle ($case) was refused but an image was loaded"; fail=1
	else
		echo "bundle-test: tampered ($case) refused: $(grep 'load-bundle:' "$work/$case.log" | tail -n1)"
	fi
done
((fail == 0)) && echo "bundle-test: ok"
exit $fail
