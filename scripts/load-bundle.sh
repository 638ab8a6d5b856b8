#!/usr/bin/env bash
# Loads an image bundle made by `make bundle` (scripts/bundle.sh) after
# verifying it: every file against SHA256SUMS, whose own digest the operator
# compares with the one published through the airlock (EXPECTED_MANIFEST_SHA256,
# when set, is checked here). A file that does not match refuses the whole
# bundle before anything is loaded; after loading, each image's ID must be the
# one in images.txt.
#
#   scripts/load-bundle.sh BUNDLE_DIR
set -euo pipefail
dir=${1:?usage: load-bundle.sh BUNDLE_DIR}
cd "$dir"
for f in SHA256SUMS images.txt flip-trust-images.tar; do
	[[ -f $f ]] || { echo "load-bundle: $dir/$f missing: refused" >&2; exit 1; }
done
if [[ -n ${EXPECTED_MANIFEST_SHA256:-} ]]; then
	got=$(sha256sum SHA256SUMS | cut -d' ' -f1)
	[[ $got == "$EXPECTED_MANIFEST_SHA256" ]] || { echo "load-bundle: SHA256SUMS digest $got is not the expected one: refused" >&2; exit 1; }
fi
# Exactly the two bundle files, each listed once.
listed=$(awk '{print $2}' SHA256SUMS | sed 's/^\*//' | sort | tr '\n' ' ')
[[ $listed == "flip-trust-images.tar images.txt " ]] || { echo "load-bundle: SHA256SUMS lists '$listed': refused" >&2; exit 1; }
if ! sha256sum --quiet --strict -c SHA256SUMS >&2; then
	echo "load-bundle: the bundle does not match its manifest: refused, nothing loaded" >&2
	exit 1
fi
docker load -q -i flip-trust-images.tar >&2
while read -r name id; do
	got=$(docker image inspect -f '{{.Id}}' "$name")
	[[ $got == "$id" ]] || { echo "load-bundle: $name loaded as $got, manifest says $id" >&2; exit 1; }
	echo "load-bundle: $name $id"
done <images.txt
