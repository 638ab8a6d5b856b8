#!/usr/bin/env bash
# make demo: starts dev-hub, a PostgreSQL cluster with a synthetic OMOP
# population, data-access-api, a PACS and a staging Orthanc (the PACS loaded
# with synthetic studies for the OMOP imaging rows), imaging-api and one
# trust-api as processes, registers the trust, shows it online with its health
# snapshot, runs cohort_query round trips (statistics computed in PostgreSQL,
# and a query the SQL guard refuses), then provisions an imaging project from
# the hub, follows the cohort's studies moving from the PACS into staging, and
# downloads one accession as an FL job would; finally a second trust joins and
# two fl-clients run a federated evaluation and a 3-round training of the
# built-in logistic regression against dev-hub's FL server, with per-round
# loss and AUC; then stops everything.
# DEMO_KEEP=1 leaves the processes running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
for b in dev-hub trust-api data-access-api omop-synth imaging-api dicom-synth fl-client; do [[ -x $BIN/$b ]] || { echo "demo: $BIN/$b missing; run make build"; exit 1; }; done
ORTHANC=${ORTHANC_BIN:-}
if [[ -z $ORTHANC ]]; then
	if [[ -x /usr/sbin/Orthanc ]]; then ORTHANC=/usr/sbin/Orthanc; else ORTHANC=$(command -v Orthanc || true); fi
fi
[[ -n $ORTHANC ]] || { echo "demo: Orthanc not found; run make deps"; exit 1; }

work=$(mktemp -d /tmp/flip-demo.XXXXXX)
chmod 711 "$work" # the database server runs as the postgres user
pids=() orthancs=()
cleanup() {
	# Orthanc's storage is thrown away with $work, so it need not shut down cleanly.
	for p in "${orthancs[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for c in "$work/omop" "$work/omop2"; do [[ -d $c ]] && "$BIN/omop-synth" -stop-cluster "$c" >/dev/null 2>&1 || true; done
	wait 2>/dev/null || true
	echo "demo: stopped; logs were in $work (removed)"
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM # through the EXIT trap, once

# Free ports on every interface: Orthanc binds 0.0.0.0.
port() { python3 -c 'import socket;s=socket.socket();s.bind(("",0));print(s.getsockname()[1]);s.close()' 2>/dev/null || shuf -i 20000-40000 -n 1; }
secret() { head -c "${1:-24}" /dev/urandom | base64 | tr -d '=+/'; }
HUB=127.0.0.1:$(port) ADMIN=127.0.0.1:$(port) TRUST=127.0.0.1:$(port) DAPI=127.0.0.1:$(port) IMAGING=127.0.0.1:$(port)
PACS_HTTP=$(port) PACS_DICOM=$(port) STAGING_HTTP=$(port) STAGING_DICOM=$(port)
PACS_PW=$(secret) STAGING_PW=$(secret)
OMOP_PORT=$(port) READER_PW=$(secret)
export DEV_HUB_ADMIN_TOKEN=$(secret 32)
export DEV_HUB_ADMIN_URL=http://$ADMIN
AES=$(head -c 32 /dev/urandom | base64)

# wait_http URL [curl options]
wait_http() { local u=$1; shift; for _ in $(seq 1 600); do curl -fsS -o /dev/null "$@" "$u" 2>/dev/null && return 0; sleep 0.05; done; echo "demo: $u did not come up"; exit 1; }
wait_tcp() { for _ in $(seq 1 600); do (: </dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "demo: port $1 did not open"; exit 1; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

# orthanc AET HTTP_PORT DICOM_PORT USER PASSWORD PEER_AET PEER_DICOM_PORT
# starts an Orthanc configured as the tests configure theirs
# (services/imaging-api/internal/orthanctest): REST on loopback with basic
# authentication, DICOM peers only from 127.0.0.1, and the other server of the
# pair as its one known modality (so staging can C-FIND and C-MOVE from the
# PACS, and the PACS accepts staging as the C-MOVE destination).
orthanc() {
	local dir=$work/orthanc-${1,,}
	mkdir -p "$dir/db"
	jq -n --arg aet "$1" --argjson http "$2" --argjson dicom "$3" --arg user "$4" --arg pw "$5" \
		--arg peer "$6" --argjson peerport "$7" --arg db "$dir/db" '{
		Name: $aet, StorageDirectory: $db, IndexDirectory: $db, Plugins: [], LuaScripts: [],
		HttpServerEnabled: true, HttpPort: $http, RemoteAccessAllowed: false,
		AuthenticationEnabled: true, RegisteredUsers: {($user): $pw}, HttpDescribeErrors: true,
		OrthancExplorerEnabled: false, WebDavEnabled: false,
		DicomServerEnabled: true, DicomAet: $aet, DicomPort: $dicom,
		DicomCheckCalledAet: true, DicomCheckModalityHost: true,
		DicomAlwaysAllowEcho: false, DicomAlwaysAllowStore: false, DicomScuTimeout: 5,
		DicomModalities: {($peer): {AET: $peer, Host: "127.0.0.1", Port: $peerport,
			AllowEcho: true, AllowFind: true, AllowMove: true, AllowGet: true, AllowStore: true}},
		StableAge: 1, SaveJobs: false, ConcurrentJobs: 2, HttpTimeout: 60, DeidentifyLogs: true,
		SyncStorageArea: false}' >"$dir/orthanc.json"
	# Debian's DCMTK leaves Nagle's algorithm on, which delays every DIMSE
	# message on loopback by tens of milliseconds; TCP_NODELAY=1 turns it off.
	(cd "$dir" && TCP_NODELAY=1 exec "$ORTHANC" orthanc.json >orthanc.log 2>&1) & orthancs+=($!)
}

step "1. dev-hub (the hub's trust-facing API on $HUB, admin API on $ADMIN)"
# The demo's trust polls ten times a second and the imaging part sends a
# status task per poll: lift the per-minute limits a production hub applies.
DEV_HUB_ADDR=$HUB DEV_HUB_ADMIN_ADDR=$ADMIN DEV_HUB_DATA_DIR=$work/hub AES_KEY_BASE64=$AES LOG_LEVEL=WARN \
	RATE_LIMIT_PENDING_PER_MIN=0 RATE_LIMIT_HEARTBEAT_PER_MIN=0 RATE_LIMIT_RESULT_PER_MIN=0 \
	"$BIN/dev-hub" serve >"$work/dev-hub.log" 2>&1 & pids+=($!)
wait_http "http://$ADMIN/health"; echo "dev-hub up"

step "2. register the trust: dev-hub trust add --name demo-trust"
"$BIN/dev-hub" trust add --name demo-trust --hub-url "http://$HUB/api" >"$work/kit.env"
sed -E 's/^(TRUST_API_KEY|TRUST_INTERNAL_SERVICE_KEY|AES_KEY_BASE64)=.*/\1=<redacted>/' "$work/kit.env" | grep -v '^\s*$' | sed 's/^/  /'

step "3. OMOP database: PostgreSQL on 127.0.0.1:$OMOP_PORT with 20,000 synthetic persons"
"$BIN/omop-synth" -start-cluster "$work/omop" -port "$OMOP_PORT" -reader-password "$READER_PW" -persons 20000 -seed 7 -truncate \
	>"$work/omop.env" 2>"$work/omop-synth.log" || { tail -n 20 "$work/omop-synth.log"; exit 1; }
grep -E '^(loaded|  [a-z_]+ )' "$work/omop-synth.log" | sed 's/^/  /' || tail -n 12 "$work/omop-synth.log" | sed 's/^/  /'

step "4. data-access-api on $DAPI (read-only role, SQL guard, disclosure floor 10)"
set -a; . "$work/kit.env"; set +a
. "$work/omop.env" # OMOP_READER_DSN
DATA_ACCESS_API_ADDR=$DAPI OMOP_DB_SERVICE_NAME=127.0.0.1 OMOP_DB_PORT=$OMOP_PORT OMOP_DB_SSLMODE=disable \
	DATA_ACCESS_POSTGRES_USER=data_analyst_reader DATA_ACCESS_POSTGRES_PASSWORD=$READER_PW OMOP_POSTGRES_DB=omop \
	COHORT_SNAPSHOT_DIR=$work/snapshots LOG_LEVEL=INFO "$BIN/data-access-api" >"$work/data-access-api.log" 2>&1 & pids+=($!)
wait_http "http://$DAPI/health"
curl -fsS "http://$DAPI/health" | jq -c . | sed 's/^/  data-access-api \/health: /'

step "5. the hospital PACS (Orthanc, AE PACS, REST :$PACS_HTTP, DICOM :$PACS_DICOM) and the staging Orthanc (AE STAGING, REST :$STAGING_HTTP, DICOM :$STAGING_DICOM)"
orthanc PACS "$PACS_HTTP" "$PACS_DICOM" pacs "$PACS_PW" STAGING "$STAGING_DICOM"
orthanc STAGING "$STAGING_HTTP" "$STAGING_DICOM" staging "$STAGING_PW" PACS "$PACS_DICOM"
wait_http "http://127.0.0.1:$PACS_HTTP/system" -u "pacs:$PACS_PW"; wait_tcp "$PACS_DICOM"
wait_http "http://127.0.0.1:$STAGING_HTTP/system" -u "staging:$STAGING_PW"; wait_tcp "$STAGING_DICOM"
echo "  Orthanc $("$ORTHANC" --version 2>/dev/null | head -n1 | awk '{print $2}') up: staging knows the PACS as a DICOM modality and the PACS knows staging"
echo "  dicom-synth: the PACS gets one synthetic study for each of the first 20 image_occurrence rows (their accession numbers)"
ORTHANC_PASSWORD=$PACS_PW "$BIN/dicom-synth" -dsn "$OMOP_READER_DSN" -limit 20 -series 2 -instances 5 \
	-orthanc "http://127.0.0.1:$PACS_HTTP" -user pacs -progress 0 2>"$work/dicom-synth.log" || { cat "$work/dicom-synth.log"; exit 1; }
sed 's/^/  /' "$work/dicom-synth.log"
echo "  PACS /statistics: $(curl -fsS -u "pacs:$PACS_PW" "http://127.0.0.1:$PACS_HTTP/statistics" | jq -c '{CountPatients, CountStudies, CountSeries, CountInstances}')"

step "6. imaging-api on $IMAGING (Orthanc backend: staging C-FINDs and C-MOVEs from the PACS)"
IMAGING_API_ADDR=$IMAGING IMAGING_API_DATA_DIR=$work/imaging BASE_IMAGES_DOWNLOAD_DIR=$work/images \
	ORTHANC_URL=http://127.0.0.1:$STAGING_HTTP ORTHANC_USERNAME=staging ORTHANC_PASSWORD=$STAGING_PW \
	PACS_AETITLE=PACS STAGING_AETITLE=STAGING DATA_ACCESS_API_URL=http://$DAPI \
	IMPORT_CONCURRENCY=2 IMPORT_BACKOFF_MIN_SECONDS=0.2 IMPORT_BACKOFF_MAX_SECONDS=1 LOG_LEVEL=INFO \
	"$BIN/imaging-api" >"$work/imaging-api.log" 2>&1 & pids+=($!)
wait_http "http://$IMAGING/health"
curl -fsS "http://$IMAGING/health" | jq -c . | sed 's/^/  imaging-api \/health: /'

step "7. trust-api with the kit (journal in $work/trust)"
# No XNAT runs here (imaging-api uses the Orthanc backend), so the health
# snapshot reports xnat as down.
DATA_ACCESS_API_URL=http://$DAPI IMAGING_API_URL=http://$IMAGING XNAT_URL=http://127.0.0.1:1 OMOP_DB_HOST=127.0.0.1 OMOP_DB_PORT=$OMOP_PORT \
	TRUST_API_ADDR=$TRUST TRUST_API_DATA_DIR=$work/trust POLL_INTERVAL_SECONDS=0.1 HEALTH_COLLECT_INTERVAL_SECONDS=2 LOG_LEVEL=INFO \
	"$BIN/trust-api" >"$work/trust-api.log" 2>&1 & pids+=($!)
wait_http "http://$TRUST/health"
curl -fsS "http://$TRUST/health" | jq -c . | sed 's/^/  trust-api \/health: /'

step "8. the trust online at the hub, with its health snapshot"
for _ in $(seq 1 100); do
	"$BIN/dev-hub" trust list >"$work/trusts.txt" 2>&1 && grep -q 'online' "$work/trusts.txt" && grep -q 'imaging-api=' "$work/trusts.txt" && break
	sleep 0.2
done
sed 's/^/  /' "$work/trusts.txt"
echo "  (xnat=down: no XNAT runs here; imaging-api uses the Orthanc backend, and dicom is staging's C-ECHO to the PACS)"

step "9. a cohort_query round trip: adults with type 2 diabetes and their BMI"
sql="SELECT p.person_id, p.gender_source_value, m.value_as_number AS bmi
FROM person p JOIN condition_occurrence c ON c.person_id = p.person_id AND c.condition_concept_id = 201826
LEFT JOIN measurement m ON m.person_id = p.person_id AND m.measurement_concept_id = 3038553"
qid=$(cat /proc/sys/kernel/random/uuid)
id=$("$BIN/dev-hub" task submit --trust demo-trust --type cohort_query --sql "$sql" --query-id "$qid" | tail -n1)
echo "  submitted task $id"
start=$(now)
"$BIN/dev-hub" task wait "$id" --timeout 60s
end=$(now)
step "10. statistics received at the hub's /api/cohort/results (computed inside PostgreSQL)"
"$BIN/dev-hub" results --query-id "$qid" | sed 's/^/  /'

step "11. a query the SQL guard refuses (reads a server file): the hub gets the reason, the database is never asked"
qid2=$(cat /proc/sys/kernel/random/uuid)
id2=$("$BIN/dev-hub" task submit --trust demo-trust --type cohort_query --sql "SELECT pg_read_file('/etc/passwd') AS person_id" --query-id "$qid2" | tail -n1)
"$BIN/dev-hub" task wait "$id2" --timeout 60s >/dev/null 2>&1 || true
"$BIN/dev-hub" results --query-id "$qid2" | sed 's/^/  /'
echo "  data-access-api log: $(grep -o '"msg":"Query validation failed"[^}]*' "$work/data-access-api.log" | head -n1)"

# task TYPE PAYLOAD: submits a task at the hub, waits for it and prints its
# result (the JSON the trust posted); fails when the task does not complete.
task() {
	local id
	id=$("$BIN/dev-hub" task submit --trust demo-trust --type "$1" --payload "$2" | tail -n1)
	"$BIN/dev-hub" task wait "$id" --timeout 60s --interval 50ms >/dev/null || { "$BIN/dev-hub" task show "$id" >&2; return 1; }
	"$BIN/dev-hub" task show "$id" | jq -r '.result // "null"'
}

step "12. imaging from the hub: freeze the cohort (persist_cohort), then create_imaging"
project=$(cat /proc/sys/kernel/random/uuid)
img_sql="SELECT person_id, accession_id FROM image_occurrence ORDER BY image_occurrence_id LIMIT 20"
enc=$("$BIN/dev-hub" seal "$project") # encrypted_project_id, as the hub sends it
echo "  hub project $project; cohort: $img_sql"
persisted=$(task persist_cohort "$(jq -nc --arg e "$enc" --arg q "$img_sql" '{encrypted_project_id: $e, query: $q}')")
echo "  persist_cohort: $(jq -c '{row_count, columns, has_accessions}' <<<"$persisted")"
img_start=$(now)
created=$(task create_imaging "$(jq -nc --arg p "$project" --arg t "$EXPECTED_TRUST_ID" --arg q "$img_sql" \
	'{project_id: $p, trust_id: $t, project_name: "Demo imaging", query: $q, users: []}')")
imaging_id=$(jq -r '.ID' <<<"$created")
echo "  create_imaging: imaging project $imaging_id ($(jq -r '.name // .Name // empty' <<<"$created"))"

step "13. get_imaging_status from the hub until every study is in staging (imaging-api moves 2 at a time)"
encoded=$(printf %s "$img_sql" | base64 -w0 | tr '+/' '-_' | tr -d '=')
status_payload=$(jq -nc --arg i "$imaging_id" --arg q "$encoded" '{imaging_project_id: $i, encoded_query: $q}')
last= polls=0 counts=
while :; do
	counts=$(task get_imaging_status "$status_payload" | jq -c '.import_status')
	polls=$((polls + 1))
	line=$(jq -r '"imported \(.successful_count)/\(.successful_count + .failed_count + .processing_count + .queued_count + .queue_failed_count) (queued \(.queued_count), processing \(.processing_count), failed \(.failed_count), not in PACS \(.queue_failed_count))"' <<<"$counts")
	[[ $line != "$last" ]] && printf '  %6ss  %s\n' "$(since "$img_start")" "$line"
	last=$line
	[[ $(jq '.processing_count + .queued_count' <<<"$counts") == 0 ]] && break
	awk -v a="$img_start" -v b="$(now)" 'BEGIN{exit !(b-a > 120)}' && { echo "demo: import incomplete after 120s"; exit 1; }
done
img_secs=$(since "$img_start")
[[ $(jq '.failed_count + .queue_failed_count' <<<"$counts") == 0 ]] || { echo "demo: some studies did not import"; exit 1; }
echo "  staging /statistics: $(curl -fsS -u "staging:$STAGING_PW" "http://127.0.0.1:$STAGING_HTTP/statistics" | jq -c '{CountPatients, CountStudies, CountSeries, CountInstances}')"

step "14. an FL job on net-1 downloads one accession: POST /download/images/net-1 on imaging-api"
accession=$(curl -fsS -H "X-Trust-Internal-Service-Key: $TRUST_INTERNAL_SERVICE_KEY" -H 'Content-Type: application/json' \
	-d "$(jq -nc --arg e "$enc" --arg q "$img_sql" '{encrypted_project_id: $e, query: $q}')" \
	"http://$DAPI/cohort/accession-ids" | jq -r '.accession_ids[0]')
echo "  first accession of the cohort (data-access-api /cohort/accession-ids): $accession"
dl_start=$(now)
path=$(curl -fsS -H "X-Trust-Internal-Service-Key: $TRUST_INTERNAL_SERVICE_KEY" -H 'Content-Type: application/json' \
	-d "$(jq -nc --arg e "$enc" --arg a "$accession" '{encrypted_central_hub_project_id: $e, accession_id: $a}')" \
	"http://$IMAGING/download/images/net-1?resource_type=DICOM" | jq -r '.path')
echo "  staged in $(since "$dl_start")s at $path"
(cd "$path" && find . -type f -printf '%P\t%s bytes\n' | sort | sed 's/^/    /')
if command -v dcmdump >/dev/null; then
	first=$(find "$path/scans" -type f -name '*.dcm' | sort | head -n1)
	echo "  dcmdump ${first#"$path"/}:"
	dcmdump +P AccessionNumber +P Modality +P PatientID +P StudyInstanceUID +P SeriesDescription "$first" 2>/dev/null | sed 's/^/    /'
fi

step "15. federated learning: a second trust, two fl-clients, dev-hub's reference FL server"
# This trust is Trust_1 (its OMOP database and data-access-api); Trust_2 gets
# its own PostgreSQL cluster with another synthetic population and its own
# data-access-api. Both freeze the same approved cohort query (the features
# of examples/logreg/cohort.sql) for one project.
OMOP2_PORT=$(port) DAPI2=127.0.0.1:$(port)
"$BIN/omop-synth" -start-cluster "$work/omop2" -port "$OMOP2_PORT" -reader-password "$READER_PW" -persons 8000 -seed 8 -truncate \
	>/dev/null 2>"$work/omop-synth2.log" || { tail -n 20 "$work/omop-synth2.log"; exit 1; }
DATA_ACCESS_API_ADDR=$DAPI2 OMOP_DB_SERVICE_NAME=127.0.0.1 OMOP_DB_PORT=$OMOP2_PORT OMOP_DB_SSLMODE=disable \
	DATA_ACCESS_POSTGRES_USER=data_analyst_reader DATA_ACCESS_POSTGRES_PASSWORD=$READER_PW OMOP_POSTGRES_DB=omop \
	COHORT_SNAPSHOT_DIR=$work/snapshots2 LOG_LEVEL=INFO "$BIN/data-access-api" >"$work/data-access-api2.log" 2>&1 & pids+=($!)
wait_http "http://$DAPI2/health"
fl_project=$(cat /proc/sys/kernel/random/uuid)
fl_enc=$("$BIN/dev-hub" seal "$fl_project" | tail -n1)
proof=$(printf %s "$AES_KEY_BASE64" | sha256sum | cut -d' ' -f1)
n=0
for dapi in "$DAPI" "$DAPI2"; do
	n=$((n + 1))
	frozen=$(curl -fsS -H "X-Trust-Internal-Service-Key: $TRUST_INTERNAL_SERVICE_KEY" -H "X-Cohort-Admin-Key: $proof" -H 'Content-Type: application/json' \
		-d "$(jq -nc --arg e "$fl_enc" --rawfile q examples/logreg/cohort.sql '{encrypted_project_id: $e, query: $q}')" "http://$dapi/cohort/snapshot")
	echo "  Trust_$n: cohort frozen, $(jq -r '.row_count' <<<"$frozen") persons"
	fl_secret=$("$BIN/dev-hub" fl client add --name "Trust_$n" | sed -n 's/^FL_CLIENT_SECRET=//p' | tr -d "'\"")
	FL_SERVER_URL=http://$HUB FL_CLIENT_NAME=Trust_$n FL_CLIENT_SECRET=$fl_secret DATA_ACCESS_API_URL=http://$dapi \
		FL_RUNNER=none FL_WORK_DIR=$work/fl$n FL_CLIENT_ADDR=127.0.0.1:$(port) FL_POLL_WAIT_SECONDS=5 IMAGES_DIR=$work/images LOG_LEVEL=INFO \
		"$BIN/fl-client" >"$work/fl-client$n.log" 2>&1 & pids+=($!)
	echo "  Trust_$n: fl-client registered (dev-hub fl client add) and polling the FL server"
done
"$BIN/dev-hub" fl model init-logreg --features 5 --out "$work/init.safetensors" >/dev/null
fl_job() { "$BIN/dev-hub" fl job submit --clients Trust_1,Trust_2 --project-id "$fl_project" --query-file examples/logreg/cohort.sql \
	--params-file examples/logreg/params.json --round-timeout 2m "$@" | tail -n1; }
echo "  evaluation of the untrained model (metrics only leave the trusts):"
fl_id=$(fl_job --kind evaluate --model "$work/init.safetensors")
"$BIN/dev-hub" fl job wait "$fl_id" --timeout 3m | sed 's/^/    /'
echo "  training: 3 rounds of FedAvg, 5 local epochs a round; each round's loss/AUC is the global model's at the round's start:"
fl_start=$(now)
fl_id=$(fl_job --kind train --rounds 3 --model "$work/init.safetensors")
"$BIN/dev-hub" fl job wait "$fl_id" --timeout 5m | sed 's/^/    /'
fl_secs=$(since "$fl_start")
final=$("$BIN/dev-hub" fl job show "$fl_id" --json | jq -r '.final_model')
echo "  evaluation of the final model $final:"
fl_eval=$(fl_job --kind evaluate --model "$final")
"$BIN/dev-hub" fl job wait "$fl_eval" --timeout 3m | sed 's/^/    /'

step summary
printf '  trust demo-trust registered, online, health snapshot delivered\n'
printf '  cohort_query %s: %s in %.2fs (submit -> COMPLETED, including poll wait)\n' "$id" \
	"$("$BIN/dev-hub" task show "$id" | grep -oE '"status": *"[A-Z_]+"' | head -n1 | grep -oE '[A-Z_]+"$' | tr -d '"')" \
	"$(awk -v a="$start" -v b="$end" 'BEGIN{print b-a}')"
printf '  imaging: %s studies PACS -> staging in %ss (create_imaging to the last get_imaging_status, %d status tasks); accession %s downloaded\n' \
	"$(jq '.successful_count' <<<"$counts")" "$img_secs" "$polls" "$accession"
printf '  federated learning: evaluation, 3 rounds of training in %ss, evaluation of the final model across Trust_1 and Trust_2\n' "$fl_secs"
if [[ ${DEMO_KEEP:-0} == 1 ]]; then echo "DEMO_KEEP=1: running; Ctrl-C stops"; wait; fi
