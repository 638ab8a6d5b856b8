#!/usr/bin/env bash
# make demo: starts dev-hub, the internal-service stand-in and one trust-api
# as processes, registers the trust, shows it online with its health snapshot
# and runs one cohort_query round trip, then stops everything.
# DEMO_KEEP=1 leaves the processes running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
for b in dev-hub trust-api; do [[ -x $BIN/$b ]] || { echo "demo: $BIN/$b missing; run make build"; exit 1; }; done

work=$(mktemp -d /tmp/flip-demo.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	echo "demo: stopped; logs were in $work (removed)"
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1]);s.close()' 2>/dev/null || shuf -i 20000-40000 -n 1; }
HUB=127.0.0.1:$(port) ADMIN=127.0.0.1:$(port) STANDIN=127.0.0.1:$(port) TRUST=127.0.0.1:$(port)
export DEV_HUB_ADMIN_TOKEN=$(head -c 32 /dev/urandom | base64 | tr -d '=+/')
export DEV_HUB_ADMIN_URL=http://$ADMIN
AES=$(head -c 32 /dev/urandom | base64)

wait_http() { for _ in $(seq 1 200); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.05; done; echo "demo: $1 did not come up"; exit 1; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. dev-hub (the hub's trust-facing API on $HUB, admin API on $ADMIN)"
DEV_HUB_ADDR=$HUB DEV_HUB_ADMIN_ADDR=$ADMIN DEV_HUB_DATA_DIR=$work/hub AES_KEY_BASE64=$AES LOG_LEVEL=WARN \
	"$BIN/dev-hub" serve >"$work/dev-hub.log" 2>&1 & pids+=($!)
wait_http "http://$ADMIN/health"; echo "dev-hub up"

step "2. register the trust: dev-hub trust add --name demo-trust"
"$BIN/dev-hub" trust add --name demo-trust --hub-url "http://$HUB/api" >"$work/kit.env"
sed -E 's/^(TRUST_API_KEY|TRUST_INTERNAL_SERVICE_KEY|AES_KEY_BASE64)=.*/\1=<redacted>/' "$work/kit.env" | grep -v '^\s*$' | sed 's/^/  /'

step "3. stand-in for data-access-api / imaging-api on $STANDIN (synthetic statistics, no patient data)"
set -a; . "$work/kit.env"; set +a
STANDIN_ADDR=$STANDIN LOG_LEVEL=WARN "$BIN/dev-hub" standin >"$work/standin.log" 2>&1 & pids+=($!)
wait_http "http://$STANDIN/health"; echo "stand-in up"

step "4. trust-api with the kit (journal in $work/trust)"
DATA_ACCESS_API_URL=http://$STANDIN IMAGING_API_URL=http://$STANDIN XNAT_URL=http://$STANDIN OMOP_DB_HOST=127.0.0.1 OMOP_DB_PORT=1 \
	TRUST_API_ADDR=$TRUST TRUST_API_DATA_DIR=$work/trust POLL_INTERVAL_SECONDS=1 HEALTH_COLLECT_INTERVAL_SECONDS=2 LOG_LEVEL=INFO \
	"$BIN/trust-api" >"$work/trust-api.log" 2>&1 & pids+=($!)
wait_http "http://$TRUST/health"
curl -fsS "http://$TRUST/health" | jq -c . | sed 's/^/  trust-api \/health: /'

step "5. the trust online at the hub, with its health snapshot"
for _ in $(seq 1 100); do
	"$BIN/dev-hub" trust list >"$work/trusts.txt" 2>&1 && grep -q 'online' "$work/trusts.txt" && grep -q 'trust-api' "$work/trusts.txt" && break
	sleep 0.2
done
sed 's/^/  /' "$work/trusts.txt"

step "6. a cohort_query round trip"
sql="SELECT person_id, gender_concept_id, year_of_birth FROM omop.person"
id=$("$BIN/dev-hub" task submit --trust demo-trust --type cohort_query --sql "$sql" | tail -n1)
echo "  submitted task $id"
start=$(date +%s.%N)
"$BIN/dev-hub" task wait "$id" --timeout 60s
end=$(date +%s.%N)
"$BIN/dev-hub" task show "$id" | sed 's/^/  /'
qid=$("$BIN/dev-hub" task show "$id" | grep -oE '"query_id": *"[0-9a-f-]{36}"' | head -n1 | grep -oE '[0-9a-f-]{36}' || true)
if [[ -n $qid ]]; then
	step "7. statistics received at the hub's /api/cohort/results"
	"$BIN/dev-hub" results --query-id "$qid" | sed 's/^/  /'
fi
echo "  stand-in received: $(curl -fsS "http://$STANDIN/_standin/requests" | jq -c '[.[] | {method, path, caller, auth_scheme}]')"

step summary
printf '  trust demo-trust registered, online, health snapshot delivered\n'
printf '  cohort_query %s: %s in %.2fs (submit -> COMPLETED, including poll wait)\n' "$id" \
	"$("$BIN/dev-hub" task show "$id" | grep -oE '"status": *"[A-Z_]+"' | head -n1 | grep -oE '[A-Z_]+"$' | tr -d '"')" \
	"$(awk -v a="$start" -v b="$end" 'BEGIN{print b-a}')"
if [[ ${DEMO_KEEP:-0} == 1 ]]; then echo "DEMO_KEEP=1: running; Ctrl-C stops"; wait; fi
