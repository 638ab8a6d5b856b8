#!/usr/bin/env bash
# Prints one closing line for the whole test run from `go test -v` logs.
set -uo pipefail
pass=$(cat "$@" 2>/dev/null | grep -cE '^\s*--- PASS' || true)
fail=$(cat "$@" 2>/dev/null | grep -cE '^\s*--- FAIL' || true)
skip=$(cat "$@" 2>/dev/null | grep -cE '^\s*--- SKIP' || true)
if [[ $fail -gt 0 ]]; then
	echo "failed tests:"; cat "$@" | grep -E '^\s*--- FAIL' | sed 's/^/  /'
fi
echo "tests: $pass passed, $fail failed, $skip skipped"
