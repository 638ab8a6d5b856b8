#!/usr/bin/env bash
# Static checks over every module of the workspace. Exits non-zero on the
# first class of problem found, after reporting all of that class.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=${TOOLS:-$PWD/bin/tools}
mkdir -p "$TOOLS"
modules=$(go list -m -f '{{.Dir}}')
prefix=$(go list -m -f '{{.Path}}' | sed -n 's#/shared$##p')

step() { printf '\n== %s\n' "$*"; }

step gofmt
unformatted=$(gofmt -l $modules)
if [[ -n $unformatted ]]; then echo "not gofmt'ed:"; echo "$unformatted"; exit 1; fi

step "go vet"
for m in $modules; do (cd "$m" && go vet ./...); done

step staticcheck
[[ -x $TOOLS/staticcheck ]] || GOBIN=$TOOLS go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
for m in $modules; do (cd "$m" && "$TOOLS/staticcheck" ./...); done

step "go mod tidy (no diff allowed)"
for m in $modules; do
	(cd "$m" && cp go.mod /tmp/check.go.mod && cp go.sum /tmp/check.go.sum 2>/dev/null || : > /tmp/check.go.sum
	 go mod tidy
	 if ! diff -q go.mod /tmp/check.go.mod >/dev/null || ! diff -q go.sum /tmp/check.go.sum >/dev/null; then
		echo "$m: go.mod/go.sum not tidy:"; diff -u /tmp/check.go.mod go.mod || true
		cp /tmp/check.go.mod go.mod; cp /tmp/check.go.sum go.sum; exit 1
	 fi)
done

step "import boundaries (services never import services; shared never imports a service)"
bad=0
for m in $modules; do
	self=$(cd "$m" && go list -m)
	deps=$(cd "$m" && go list -deps -test -f '{{.ImportPath}}' ./... | grep "^$prefix/services/" | grep -v "^$self\(/\|$\)" || true)
	if [[ -n $deps ]]; then echo "$self imports another service: $deps"; bad=1; fi
done
((bad == 0)) || exit 1
echo ok

step govulncheck
[[ -x $TOOLS/govulncheck ]] || GOBIN=$TOOLS go install golang.org/x/vuln/cmd/govulncheck@v1.9.0
db=${GOVULNDB:-https://vuln.go.dev}
if [[ $db == http* ]] && ! curl -fsS -m 5 -o /dev/null "$db/index/db.json"; then
	echo "govulncheck: the vulnerability database $db is unreachable from this machine;"
	echo "set GOVULNDB=file:///path/to/mirror to check offline. Not checked."
	[[ ${CHECK_REQUIRE_VULNDB:-0} == 1 ]] && exit 1
	vuln_skipped=1
else
	for m in $modules; do (cd "$m" && GOVULNDB=$db "$TOOLS/govulncheck" ./...); done
fi
if [[ ${vuln_skipped:-0} == 1 ]]; then
	printf '\ncheck: passed, except govulncheck, which could not reach its database\n'
else
	printf '\ncheck: all passed\n'
fi
