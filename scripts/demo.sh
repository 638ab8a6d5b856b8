#!/usr/bin/env bash
# make demo: starts dev-hub, a PostgreSQL cluster with a synthetic OMOP
# population, data-access-api, the imaging stand-in and one trust-api as
# processes, registers the trust, shows it online with its health snapshot and
# runs cohort_query round trips (statistics computed in PostgreSQL, and a
# query the SQL guard refuses), then stops everything.
# DEMO_KEEP=1 leaves the processes running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
for b in dev-hub trust-api data-access-api omop-synth; do [[ -x $BIN/$b ]] || { echo "demo: $BIN/$b missing; run make build"; exit 1; }; done

work=$(mktemp -d /tmp/flip-demo.XXXXXX)
chmod 711 "$work" # the database server runs as the postgres user
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	[[ -d $work/omop ]] && "$BIN/omop-synth" -stop-cluster "$work/omop" >/dev/null 2>&1 || true
	wait 2>/dev/null || true
	echo "demo: stopped; logs were in $work (removed)"
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1]);s.close()' 2>/dev/null || shuf -i 20000-40000 -n 1; }
HUB=127.0.0.1:$(port) ADMIN=127.0.0.1:$(port) STANDIN=127.0.0.1:$(port) TRUST=127.0.0.1:$(port) DAPI=127.0.0.1:$(port)
OMOP_PORT=$(port) READER_PW=$(head -c 24 /dev/urandom | base64 | tr -d '=+/')
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

step "3. OMOP database: PostgreSQL on 127.0.0.1:$OMOP_PORT with 20,000 synthetic persons"
"$BIN/omop-synth" -start-cluster "$work/omop" -port "$OMOP_PORT" -reader-password "$READER_PW" -persons 20000 -seed 7 -truncate \
	>"$work/omop.env" 2>"$work/omop-synth.log" || { tail -n 20 "$work/omop-synth.log"; exit 1; }
grep -E '^(loaded|  [a-z_]+ )' "$work/omop-synth.log" | sed 's/^/  /' || tail -n 12 "$work/omop-synth.log" | sed 's/^/  /'

step "4. data-access-api on $DAPI (read-only role, SQL guard, disclosure floor 10) and the imaging stand-in on $STANDIN"
set -a; . "$work/kit.env"; set +a
DATA_ACCESS_API_ADDR=$DAPI OMOP_DB_SERVICE_NAME=127.0.0.1 OMOP_DB_PORT=$OMOP_PORT OMOP_DB_SSLMODE=disable \
	DATA_ACCESS_POSTGRES_USER=data_analyst_reader DATA_ACCESS_POSTGRES_PASSWORD=$READER_PW OMOP_POSTGRES_DB=omop \
	COHORT_SNAPSHOT_DIR=$work/snapshots LOG_LEVEL=INFO "$BIN/data-access-api" >"$work/data-access-api.log" 2>&1 & pids+=($!)
STANDIN_ADDR=$STANDIN LOG_LEVEL=WARN "$BIN/dev-hub" standin >"$work/standin.log" 2>&1 & pids+=($!)
wait_http "http://$DAPI/health"; wait_http "http://$STANDIN/health"
curl -fsS "http://$DAPI/health" | jq -c . | sed 's/^/  data-access-api \/health: /'

step "5. trust-api with the kit (journal in $work/trust)"
DATA_ACCESS_API_URL=http://$DAPI IMAGING_API_URL=http://$STANDIN XNAT_URL=http://$STANDIN OMOP_DB_HOST=127.0.0.1 OMOP_DB_PORT=$OMOP_PORT \
	TRUST_API_ADDR=$TRUST TRUST_API_DATA_DIR=$work/trust POLL_INTERVAL_SECONDS=1 HEALTH_COLLECT_INTERVAL_SECONDS=2 LOG_LEVEL=INFO \
	"$BIN/trust-api" >"$work/trust-api.log" 2>&1 & pids+=($!)
wait_http "http://$TRUST/health"
curl -fsS "http://$TRUST/health" | jq -c . | sed 's/^/  trust-api \/health: /'

step "6. the trust online at the hub, with its health snapshot"
for _ in $(seq 1 100); do
	"$BIN/dev-hub" trust list >"$work/trusts.txt" 2>&1 && grep -q 'online' "$work/trusts.txt" && grep -q 'trust-api' "$work/trusts.txt" && break
	sleep 0.2
done
sed 's/^/  /' "$work/trusts.txt"

step "7. a cohort_query round trip: adults with type 2 diabetes and their BMI"
sql="SELECT p.person_id, p.gender_source_value, m.value_as_number AS bmi
FROM person p JOIN condition_occurrence c ON c.person_id = p.person_id AND c.condition_concept_id = 201826
LEFT JOIN measurement m ON m.person_id = p.person_id AND m.measurement_concept_id = 3038553"
qid=$(cat /proc/sys/kernel/random/uuid)
id=$("$BIN/dev-hub" task submit --trust demo-trust --type cohort_query --sql "$sql" --query-id "$qid" | tail -n1)
echo "  submitted task $id"
start=$(date +%s.%N)
"$BIN/dev-hub" task wait "$id" --timeout 60s
end=$(date +%s.%N)
step "8. statistics received at the hub's /api/cohort/results (computed inside PostgreSQL)"
"$BIN/dev-hub" results --query-id "$qid" | sed 's/^/  /'

step "9. a query the SQL guard refuses (reads a server file): the hub gets the reason, the database is never asked"
qid2=$(cat /proc/sys/kernel/random/uuid)
id2=$("$BIN/dev-hub" task submit --trust demo-trust --type cohort_query --sql "SELECT pg_read_file('/etc/passwd') AS person_id" --query-id "$qid2" | tail -n1)
"$BIN/dev-hub" task wait "$id2" --timeout 60s >/dev/null 2>&1 || true
"$BIN/dev-hub" results --query-id "$qid2" | sed 's/^/  /'
echo "  data-access-api log: $(grep -o '"msg":"Query validation failed"[^}]*' "$work/data-access-api.log" | head -n1)"

step summary
printf '  trust demo-trust registered, online, health snapshot delivered\n'
printf '  cohort_query %s: %s in %.2fs (submit -> COMPLETED, including poll wait)\n' "$id" \
	"$("$BIN/dev-hub" task show "$id" | grep -oE '"status": *"[A-Z_]+"' | head -n1 | grep -oE '[A-Z_]+"$' | tr -d '"')" \
	"$(awk -v a="$start" -v b="$end" 'BEGIN{print b-a}')"
if [[ ${DEMO_KEEP:-0} == 1 ]]; then echo "DEMO_KEEP=1: running; Ctrl-C stops"; wait; fi
