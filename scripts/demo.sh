#!/usr/bin/env bash
# make demo: the whole FLIP story on one machine, as processes (no Docker).
#
# dev-hub (hub API, admin API, reference FL server) and two trust nodes,
# Trust_1 and Trust_2, each with its own PostgreSQL cluster holding its own
# synthetic OMOP population, data-access-api, a PACS Orthanc loaded with
# synthetic studies for the OMOP imaging rows, a staging Orthanc,
# imaging-api, trust-api (the node's egress gate: airlock, hash-chained
# ledger, privacy budget) and fl-client (which sends everything it
# submits through its trust-api).
#
# The story: register the trusts -> a cohort query with statistics to both
# (Trust_2 holds cohort results in its airlock until a local reviewer
# approves them) -> project approval: frozen cohorts and an imaging import
# PACS -> staging -> a federated evaluation -> a 3-round training with the
# DP filter on, spending each trust's privacy budget -> each trust's ledger
# summary and `trust-api audit verify` -> a summary table.
#
# Logs and state stay in $DEMO_DIR (default ./.demo). The processes are
# stopped at the end unless DEMO_KEEP=1; `make demo-down` (this script with
# the argument `down`) stops whatever is left and removes the folder.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
DEMO_DIR=${DEMO_DIR:-$PWD/.demo}
[[ $DEMO_DIR == /* ]] || DEMO_DIR=$PWD/$DEMO_DIR
LOGS=$DEMO_DIR/logs PIDS=$DEMO_DIR/pids

# ---- process bookkeeping: one pid file per process, "pid starttime", so a
# recycled pid is never signalled.
starttime() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null || true; }
track() { echo "$2 $(starttime "$2")" >"$PIDS/$1.pid"; }
# service NAME: records the last background process and stops this shell
# waiting for it (its end is not news; stop_all ends it).
service() { track "$1" "$!"; disown "$!"; }
ours() { # pid file -> pid when that process still runs
	local pid st
	read -r pid st <"$1" 2>/dev/null || return 1
	[[ -n $pid && -n $st && $(starttime "$pid") == "$st" ]] && echo "$pid"
}
stop_all() {
	[[ -d $PIDS ]] || return 0
	local f pid live=()
	for f in "$PIDS"/*.pid; do
		[[ -e $f ]] || continue
		pid=$(ours "$f") || { rm -f "$f"; continue; }
		case $f in
		*orthanc*) kill -KILL "$pid" 2>/dev/null || true ;; # its storage is throwaway
		*) kill -TERM "$pid" 2>/dev/null || true ;;
		esac
		live+=("$f")
	done
	for _ in $(seq 1 100); do
		local left=0
		for f in "${live[@]}"; do ours "$f" >/dev/null && left=1; done
		((left)) || break
		sleep 0.1
	done
	for f in "${live[@]}"; do pid=$(ours "$f") && kill -KILL "$pid" 2>/dev/null || true; rm -f "$f"; done
	for c in "$DEMO_DIR"/trust*/omop; do
		[[ -d $c ]] && "$BIN/omop-synth" -stop-cluster "$c" >/dev/null 2>&1 || true
	done
}

if [[ ${1:-} == down ]]; then
	if [[ ! -d $DEMO_DIR ]]; then echo "demo-down: nothing at $DEMO_DIR"; exit 0; fi
	stop_all
	rm -rf "$DEMO_DIR"
	echo "demo-down: processes stopped, $DEMO_DIR removed"
	exit 0
fi

for b in dev-hub trust-api data-access-api omop-synth imaging-api dicom-synth fl-client; do
	[[ -x $BIN/$b ]] || { echo "demo: $BIN/$b missing; run make build"; exit 1; }
done
ORTHANC=${ORTHANC_BIN:-}
if [[ -z $ORTHANC ]]; then
	if [[ -x /usr/sbin/Orthanc ]]; then ORTHANC=/usr/sbin/Orthanc; else ORTHANC=$(command -v Orthanc || true); fi
fi
[[ -n $ORTHANC ]] || { echo "demo: Orthanc not found; run make deps"; exit 1; }
for t in jq curl python3; do command -v $t >/dev/null || { echo "demo: $t not found; run make deps"; exit 1; }; done

if [[ -d $DEMO_DIR ]]; then
	echo "demo: cleaning the previous run in $DEMO_DIR"
	stop_all
	rm -rf "$DEMO_DIR"
fi
mkdir -p "$LOGS" "$PIDS"
chmod 711 "$DEMO_DIR" # the database servers run as the postgres user

DOWN="make demo-down"
[[ $DEMO_DIR == "$PWD/.demo" ]] || DOWN="DEMO_DIR=$DEMO_DIR make demo-down"
DEMO_START=$(date +%s.%N)
finished=0
on_exit() {
	local rc=$?
	if ((!finished)); then
		echo
		echo "demo: FAILED (exit $rc); logs in $LOGS"
	fi
	if [[ ${DEMO_KEEP:-0} == 1 ]]; then
		echo "demo: DEMO_KEEP=1, the processes keep running; $DOWN stops them and removes $DEMO_DIR"
	else
		stop_all
		((finished)) && echo "demo: processes stopped; logs and state in $DEMO_DIR ($DOWN removes it)"
	fi
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# ---- helpers
port() { python3 -c 'import socket;s=socket.socket();s.bind(("",0));print(s.getsockname()[1]);s.close()'; }
secret() { head -c "${1:-24}" /dev/urandom | base64 | tr -d '=+/'; }
uuid() { cat /proc/sys/kernel/random/uuid; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1fs", b-a}'; }
die() { echo "demo: $*" >&2; exit 1; }
wait_http() { local u=$1; shift; for _ in $(seq 1 1200); do curl -fsS -o /dev/null "$@" "$u" 2>/dev/null && return 0; sleep 0.05; done; die "$u did not come up"; }
wait_tcp() { for _ in $(seq 1 600); do (: </dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; die "port $1 did not open"; }
STEP=0
step() { STEP=$((STEP + 1)); printf '\n\033[1m%d. %s\033[0m\n' "$STEP" "$*"; }
say() { printf '   %s\n' "$*"; }
ROWS=()
row() { ROWS+=("$1"$'\x1f'"$2"$'\x1f'"$3"$'\x1f'"$4"); } # step, status, time, result
kv() { sed -n "s/^$2=//p" "$1" | tail -n1 | sed -E "s/^['\"](.*)['\"]\$/\1/"; }
hub() { "$BIN/dev-hub" "$@"; }

export DEV_HUB_ADMIN_TOKEN DEV_HUB_ADMIN_URL AES_KEY_BASE64
HUB=127.0.0.1:$(port) ADMIN=127.0.0.1:$(port)
DEV_HUB_ADMIN_TOKEN=$(secret 32) DEV_HUB_ADMIN_URL=http://$ADMIN
AES_KEY_BASE64=$(head -c 32 /dev/urandom | base64)
READER_PW=$(secret)
FL_PROJECT=$(uuid) IMG_PROJECT=$(uuid)
# The DP filter: every update clipped to L2 norm 1 and noised with σ = 0.1
# (N(0, 0.1²) per coordinate). Two sites, full-batch updates (q = 1) and 3
# rounds make that a large ε: at this noise the loss still falls and the AUC
# rises every round on the synthetic data; more noise buys a smaller ε at
# the price of a model that no longer improves reliably in 3 rounds.
DP_CLIP=1 DP_SIGMA=0.1 BUDGET_EPS=300 BUDGET_DELTA=1e-5

# ---- per-trust services
# orthanc T AET HTTP DICOM USER PASSWORD PEER PEER_DICOM: an Orthanc as the
# imaging-api tests configure theirs: REST on loopback with basic
# authentication, DICOM peers only from 127.0.0.1, the other server of the
# pair as its one known modality (staging C-FINDs and C-MOVEs from the PACS).
orthanc() {
	local dir=$DEMO_DIR/$1/orthanc-${2,,}
	mkdir -p "$dir/db"
	jq -n --arg aet "$2" --argjson http "$3" --argjson dicom "$4" --arg user "$5" --arg pw "$6" \
		--arg peer "$7" --argjson peerport "$8" --arg db "$dir/db" '{
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
	(cd "$dir" && TCP_NODELAY=1 exec "$ORTHANC" orthanc.json >"$LOGS/$1-orthanc-${2,,}.log" 2>&1) &
	service "$1-orthanc-${2,,}"
}

# Per trust t (trust1, trust2) the settings live in variables T_<name>_t.
declare -A P # P[trust1.dapi] etc.
NAMES=(Trust_1 Trust_2) KEYS=(trust1 trust2) PERSONS=(20000 8000) SEEDS=(7 8)
for k in "${KEYS[@]}"; do
	for s in trust dapi imaging flc review; do P[$k.$s]=127.0.0.1:$(port); done
	for s in omop pacs_http pacs_dicom staging_http staging_dicom; do P[$k.$s]=$(port); done
	P[$k.pacs_pw]=$(secret) P[$k.staging_pw]=$(secret) P[$k.reviewer_key]=$(secret 36)
	mkdir -p "$DEMO_DIR/$k"
done

# trust_env k: the trust's kit, exported, for a service started in a subshell.
trust_env() { set -a; . "$DEMO_DIR/$1/kit.env"; set +a; }

start_trust_services() { # k name
	local k=$1 n=$2 d=$DEMO_DIR/$1
	(
		trust_env "$k"
		. "$d/omop.env"
		DATA_ACCESS_API_ADDR=${P[$k.dapi]} OMOP_DB_SERVICE_NAME=127.0.0.1 OMOP_DB_PORT=${P[$k.omop]} OMOP_DB_SSLMODE=disable \
			DATA_ACCESS_POSTGRES_USER=data_analyst_reader DATA_ACCESS_POSTGRES_PASSWORD=$READER_PW OMOP_POSTGRES_DB=omop \
			COHORT_SNAPSHOT_DIR=$d/snapshots LOG_LEVEL=INFO exec "$BIN/data-access-api" >"$LOGS/$k-data-access-api.log" 2>&1
	) &
	service "$k-data-access-api"
	(
		trust_env "$k"
		IMAGING_API_ADDR=${P[$k.imaging]} IMAGING_API_DATA_DIR=$d/imaging BASE_IMAGES_DOWNLOAD_DIR=$d/images \
			ORTHANC_URL=http://127.0.0.1:${P[$k.staging_http]} ORTHANC_USERNAME=staging ORTHANC_PASSWORD=${P[$k.staging_pw]} \
			PACS_AETITLE=PACS STAGING_AETITLE=STAGING DATA_ACCESS_API_URL=http://${P[$k.dapi]} \
			IMPORT_CONCURRENCY=2 IMPORT_BACKOFF_MIN_SECONDS=0.2 IMPORT_BACKOFF_MAX_SECONDS=1 LOG_LEVEL=INFO \
			exec "$BIN/imaging-api" >"$LOGS/$k-imaging-api.log" 2>&1
	) &
	service "$k-imaging-api"
	# Trust_2 holds cohort results for a local reviewer (the airlock).
	local review=
	[[ $k == trust2 ]] && review=cohort_results=hold
	(
		trust_env "$k"
		# No XNAT runs here (imaging-api uses the Orthanc backend): the
		# health snapshot reports xnat as down.
		DATA_ACCESS_API_URL=http://${P[$k.dapi]} IMAGING_API_URL=http://${P[$k.imaging]} XNAT_URL=http://127.0.0.1:1 \
			OMOP_DB_HOST=127.0.0.1 OMOP_DB_PORT=${P[$k.omop]} TRUST_API_ADDR=${P[$k.trust]} TRUST_API_DATA_DIR=$d/trust-api \
			POLL_INTERVAL_SECONDS=0.2 HEALTH_COLLECT_INTERVAL_SECONDS=2 DELIVERY_BACKOFF_MIN_SECONDS=0.2 DELIVERY_BACKOFF_MAX_SECONDS=2 \
			EGRESS_REVIEW=$review EGRESS_REVIEW_ADDR=${P[$k.review]} EGRESS_REVIEWER_KEY=${P[$k.reviewer_key]} \
			PRIVACY_BUDGETS=$FL_PROJECT=$BUDGET_EPS:$BUDGET_DELTA LOG_LEVEL=INFO \
			exec "$BIN/trust-api" >"$LOGS/$k-trust-api.log" 2>&1
	) &
	service "$k-trust-api"
	(
		trust_env "$k"
		FL_SERVER_URL=http://$HUB FL_CLIENT_NAME=$n FL_CLIENT_SECRET=$(kv "$d/fl.env" FL_CLIENT_SECRET) \
			DATA_ACCESS_API_URL=http://${P[$k.dapi]} IMAGING_API_URL=http://${P[$k.imaging]} TRUST_API_URL=http://${P[$k.trust]} \
			FL_DP_CLIP_NORM=$DP_CLIP FL_DP_NOISE_MULTIPLIER=$DP_SIGMA \
			FL_RUNNER=none FL_WORK_DIR=$d/fl FL_CLIENT_ADDR=${P[$k.flc]} FL_POLL_WAIT_SECONDS=5 IMAGES_DIR=$d/images LOG_LEVEL=INFO \
			exec "$BIN/fl-client" >"$LOGS/$k-fl-client.log" 2>&1
	) &
	service "$k-fl-client"
}

# task k TYPE PAYLOAD: a task for trust k through the hub; prints its result.
task() {
	local id
	id=$(hub task submit --trust "${NAMES[$(idx "$1")]}" --type "$2" --payload "$3" | tail -n1)
	hub task wait "$id" --timeout 120s --interval 100ms >/dev/null || { hub task show "$id" >&2; return 1; }
	hub task show "$id" | jq -r '.result // "null"'
}
idx() { [[ $1 == trust1 ]] && echo 0 || echo 1; }

echo "FLIP trust node demo: dev-hub and two trusts as processes; logs and state in $DEMO_DIR"

# ---------------------------------------------------------------------------
step "dev-hub: the hub's trust API on $HUB, admin API on $ADMIN, reference FL server"
t0=$(now)
# Two trusts poll five times a second and the imaging part sends status
# tasks: lift the per-minute limits a production hub applies.
DEV_HUB_ADDR=$HUB DEV_HUB_ADMIN_ADDR=$ADMIN DEV_HUB_DATA_DIR=$DEMO_DIR/hub LOG_LEVEL=WARN \
	RATE_LIMIT_PENDING_PER_MIN=0 RATE_LIMIT_HEARTBEAT_PER_MIN=0 RATE_LIMIT_RESULT_PER_MIN=0 \
	"$BIN/dev-hub" serve >"$LOGS/dev-hub.log" 2>&1 &
service dev-hub
wait_http "http://$ADMIN/health"
say "dev-hub up ($(since "$t0"))"

# ---------------------------------------------------------------------------
step "register the trusts at the hub: dev-hub trust add, dev-hub fl client add"
t0=$(now)
for i in 0 1; do
	k=${KEYS[$i]} n=${NAMES[$i]}
	hub trust add --name "$n" --hub-url "http://$HUB/api" >"$DEMO_DIR/$k/kit.env"
	[[ $(kv "$DEMO_DIR/$k/kit.env" AES_KEY_BASE64) == "$AES_KEY_BASE64" ]] || die "$n: the kit's AES key is not the hub's"
	hub fl client add --name "$n" >"$DEMO_DIR/$k/fl.env"
	say "$n: trust id $(kv "$DEMO_DIR/$k/kit.env" EXPECTED_TRUST_ID), kit in $k/kit.env; FL client $n registered"
done
row "register Trust_1, Trust_2" ok "$(since "$t0")" "kits issued, FL clients added"

# ---------------------------------------------------------------------------
step "bring up both trust nodes (each: PostgreSQL + OMOP, PACS + staging Orthanc, data-access-api, imaging-api, trust-api, fl-client)"
t0=$(now)
for i in 0 1; do
	k=${KEYS[$i]}
	"$BIN/omop-synth" -start-cluster "$DEMO_DIR/$k/omop" -port "${P[$k.omop]}" -reader-password "$READER_PW" \
		-persons "${PERSONS[$i]}" -seed "${SEEDS[$i]}" -truncate >"$DEMO_DIR/$k/omop.env" 2>"$LOGS/$k-omop-synth.log" &
	track "$k-omop-synth" $!
	orthanc "$k" PACS "${P[$k.pacs_http]}" "${P[$k.pacs_dicom]}" pacs "${P[$k.pacs_pw]}" STAGING "${P[$k.staging_dicom]}"
	orthanc "$k" STAGING "${P[$k.staging_http]}" "${P[$k.staging_dicom]}" staging "${P[$k.staging_pw]}" PACS "${P[$k.pacs_dicom]}"
done
for i in 0 1; do
	k=${KEYS[$i]} n=${NAMES[$i]}
	read -r pid _ <"$PIDS/$k-omop-synth.pid"
	wait "$pid" || { tail -n 20 "$LOGS/$k-omop-synth.log"; die "$n: omop-synth failed"; }
	rm -f "$PIDS/$k-omop-synth.pid"
	say "$n: PostgreSQL on 127.0.0.1:${P[$k.omop]}, $(printf "%'d" "${PERSONS[$i]}") synthetic persons (seed ${SEEDS[$i]}) loaded"
done
for i in 0 1; do
	k=${KEYS[$i]} n=${NAMES[$i]}
	wait_http "http://127.0.0.1:${P[$k.pacs_http]}/system" -u "pacs:${P[$k.pacs_pw]}"; wait_tcp "${P[$k.pacs_dicom]}"
	wait_http "http://127.0.0.1:${P[$k.staging_http]}/system" -u "staging:${P[$k.staging_pw]}"; wait_tcp "${P[$k.staging_dicom]}"
	. "$DEMO_DIR/$k/omop.env" # OMOP_READER_DSN
	ORTHANC_PASSWORD=${P[$k.pacs_pw]} "$BIN/dicom-synth" -dsn "$OMOP_READER_DSN" -limit 20 -series 2 -instances 5 \
		-orthanc "http://127.0.0.1:${P[$k.pacs_http]}" -user pacs -progress 0 2>"$LOGS/$k-dicom-synth.log" ||
		{ cat "$LOGS/$k-dicom-synth.log"; die "$n: dicom-synth failed"; }
	stats=$(curl -fsS -u "pacs:${P[$k.pacs_pw]}" "http://127.0.0.1:${P[$k.pacs_http]}/statistics")
	say "$n: PACS Orthanc :${P[$k.pacs_http]} holds $(jq -r '"\(.CountStudies) studies, \(.CountInstances) instances"' <<<"$stats") (one per image_occurrence row); staging Orthanc :${P[$k.staging_http]} empty"
	start_trust_services "$k" "$n"
done
for k in "${KEYS[@]}"; do
	n=${NAMES[$(idx "$k")]}
	wait_http "http://${P[$k.dapi]}/health"; wait_http "http://${P[$k.imaging]}/health"
	wait_http "http://${P[$k.trust]}/health"; wait_http "http://${P[$k.flc]}/health"
	gate="egress gate: ledger, budget ε=$BUDGET_EPS for the FL project"
	[[ $k == trust2 ]] && gate+=", cohort_results held for review"
	say "$n: data-access-api ${P[$k.dapi]}, imaging-api ${P[$k.imaging]}, trust-api ${P[$k.trust]} ($gate), fl-client ${P[$k.flc]} (DP clip $DP_CLIP, σ $DP_SIGMA)"
done
for _ in $(seq 1 200); do
	hub trust list >"$DEMO_DIR/trusts.txt" 2>&1 && [[ $(grep -c online "$DEMO_DIR/trusts.txt") == 2 ]] &&
		[[ $(grep 'data-access-api=healthy' "$DEMO_DIR/trusts.txt" | grep -c 'imaging-api=healthy') == 2 ]] && break
	sleep 0.2
done
[[ $(grep -c online "$DEMO_DIR/trusts.txt") == 2 ]] || { cat "$DEMO_DIR/trusts.txt"; die "the trusts did not come online"; }
say "at the hub (dev-hub trust list):"
sed 's/^/     /' "$DEMO_DIR/trusts.txt"
say "(xnat=down: no XNAT here; imaging-api uses the Orthanc backend)"
row "start both trust nodes" ok "$(since "$t0")" "2 x (PostgreSQL, 2 Orthanc, 4 services), both online"

# ---------------------------------------------------------------------------
step "cohort query with statistics to both trusts: adults with type 2 diabetes and their BMI"
sql="SELECT p.person_id, p.gender_source_value, m.value_as_number AS bmi
FROM person p JOIN condition_occurrence c ON c.person_id = p.person_id AND c.condition_concept_id = 201826
LEFT JOIN measurement m ON m.person_id = p.person_id AND m.measurement_concept_id = 3038553"
qid=$(uuid)
declare -A QT QS
for k in "${KEYS[@]}"; do
	QS[$k]=$(now)
	QT[$k]=$(hub task submit --trust "${NAMES[$(idx "$k")]}" --type cohort_query --sql "$sql" --query-id "$qid" | tail -n1)
done
say "query $qid submitted to Trust_1 and Trust_2"
hub task wait "${QT[trust1]}" --timeout 120s --interval 100ms >/dev/null
QSEC[0]=$(since "${QS[trust1]}")
# Trust_2's statistics wait in its airlock for a local reviewer.
held=
for _ in $(seq 1 300); do
	held=$(EGRESS_REVIEW_ADDR=${P[trust2.review]} EGRESS_REVIEWER_KEY=${P[trust2.reviewer_key]} "$BIN/trust-api" review list 2>/dev/null |
		awk 'NR > 1 && $3 == "cohort_results" {print $1; exit}')
	[[ -n $held ]] && break
	sleep 0.2
done
[[ -n $held ]] || die "Trust_2: no cohort result held for review"
item=$(EGRESS_REVIEW_ADDR=${P[trust2.review]} EGRESS_REVIEWER_KEY=${P[trust2.reviewer_key]} "$BIN/trust-api" review show "$held")
say "Trust_2 airlock: item $held held ($(jq -r '"\(.channel), \(.size) bytes"' <<<"$item")); the hub sees the task in progress"
EGRESS_REVIEW_ADDR=${P[trust2.review]} EGRESS_REVIEWER_KEY=${P[trust2.reviewer_key]} "$BIN/trust-api" review approve "$held" \
	--reviewer "Demo Reviewer" --note "checked against the SDC checklist" >"$DEMO_DIR/trust2/review-approve.json"
say "Trust_2 reviewer: trust-api review approve $held --reviewer 'Demo Reviewer' -> $(jq -r '.state // .decision // "done"' "$DEMO_DIR/trust2/review-approve.json")"
hub task wait "${QT[trust2]}" --timeout 120s --interval 100ms >/dev/null
QSEC[1]=$(since "${QS[trust2]}")
hub results --query-id "$qid" >"$DEMO_DIR/cohort-results.json"
for i in 0 1; do
	k=${KEYS[$i]} n=${NAMES[$i]}
	tid=$(kv "$DEMO_DIR/$k/kit.env" EXPECTED_TRUST_ID)
	r=$(jq -c --arg t "$tid" '[.[] | select(.trust_id == $t)][0]' "$DEMO_DIR/cohort-results.json")
	line=$(jq -r '"\(.record_count) records (" + ([.data[] | select(.name == "Sex Distribution") | .results[] | "\(.value) \(.count)"] | join(" ")) + "); " + ([.data[].name] | join(", "))' <<<"$r" | cut -c1-150)
	st=$(hub task show "${QT[$k]}" | jq -r .status)
	say "$n: $st in ${QSEC[$i]}; statistics at the hub: $line"
	row "cohort query $n" "$st" "${QSEC[$i]}" "$line$([[ $k == trust2 ]] && echo ", airlock approved")"
done
# A query the SQL guard refuses: the hub gets the reason, the database is never asked.
qid2=$(uuid)
id2=$(hub task submit --trust Trust_1 --type cohort_query --sql "SELECT pg_read_file('/etc/passwd') AS person_id" --query-id "$qid2" | tail -n1)
hub task wait "$id2" --timeout 60s >/dev/null 2>&1 || true
say "Trust_1, a query reading a server file: $(hub task show "$id2" | jq -r '"\(.status): \(.result // "" | fromjson? // . | .error // . | tostring | .[0:100])"')"

# ---------------------------------------------------------------------------
step "project approval: frozen cohorts (persist_cohort) at both trusts, then an imaging import PACS -> staging"
t0=$(now)
img_sql="SELECT person_id, accession_id FROM image_occurrence ORDER BY image_occurrence_id LIMIT 20"
fl_enc=$(hub seal "$FL_PROJECT" | tail -n1)
img_enc=$(hub seal "$IMG_PROJECT" | tail -n1)
say "FL project $FL_PROJECT (heart-failure model, examples/logreg/cohort.sql); imaging project $IMG_PROJECT (first 20 imaging studies)"
declare -A FROZEN
for k in "${KEYS[@]}"; do
	n=${NAMES[$(idx "$k")]}
	a=$(task "$k" persist_cohort "$(jq -nc --arg e "$fl_enc" --rawfile q examples/logreg/cohort.sql '{encrypted_project_id: $e, query: $q}')")
	b=$(task "$k" persist_cohort "$(jq -nc --arg e "$img_enc" --arg q "$img_sql" '{encrypted_project_id: $e, query: $q}')")
	FROZEN[$k]=$(jq -r '.row_count' <<<"$a")
	say "$n: FL cohort frozen, $(jq -r '.row_count' <<<"$a") persons; imaging cohort frozen, $(jq -r '.row_count' <<<"$b") rows with accessions"
done
img_start=$(now)
declare -A IMG_ID
for k in "${KEYS[@]}"; do
	created=$(task "$k" create_imaging "$(jq -nc --arg p "$IMG_PROJECT" --arg t "$(kv "$DEMO_DIR/$k/kit.env" EXPECTED_TRUST_ID)" --arg q "$img_sql" \
		'{project_id: $p, trust_id: $t, project_name: "Demo imaging", query: $q, users: []}')")
	IMG_ID[$k]=$(jq -r '.ID' <<<"$created")
	say "${NAMES[$(idx "$k")]}: create_imaging -> imaging project ${IMG_ID[$k]}"
done
encoded=$(printf %s "$img_sql" | base64 -w0 | tr '+/' '-_' | tr -d '=')
declare -A LAST DONE COUNTS POLLS
say "status through the hub (get_imaging_status) once a second; a count under the disclosure floor of 10 is withheld: <10"
while :; do
	all=1
	for k in "${KEYS[@]}"; do
		[[ -n ${DONE[$k]:-} ]] && continue
		c=$(task "$k" get_imaging_status "$(jq -nc --arg i "${IMG_ID[$k]}" --arg q "$encoded" '{imaging_project_id: $i, encoded_query: $q}')" | jq -c '.import_status')
		POLLS[$k]=$((${POLLS[$k]:-0} + 1))
		line=$(jq -r '"imported \(.successful_count // "<10")/20 (queued \(.queued_count // "<10"), moving \(.processing_count // "<10"), failed \(.failed_count // "<10"), not in PACS \(.queue_failed_count // "<10"))"' <<<"$c")
		[[ $line != "${LAST[$k]:-}" ]] && say "$(printf '%6s' "$(since "$img_start")")  ${NAMES[$(idx "$k")]}: $line"
		LAST[$k]=$line COUNTS[$k]=$c
		if [[ $(jq '(.processing_count // 1) + (.queued_count // 1)' <<<"$c") == 0 ]]; then DONE[$k]=$(since "$img_start"); else all=0; fi
	done
	((all)) && break
	awk -v a="$img_start" -v b="$(now)" 'BEGIN{exit !(b-a > 180)}' && die "imaging import incomplete after 180s"
	sleep 1
done
for k in "${KEYS[@]}"; do
	n=${NAMES[$(idx "$k")]}
	[[ $(jq '(.failed_count // 1) + (.queue_failed_count // 1)' <<<"${COUNTS[$k]}") == 0 ]] || die "$n: some studies did not import"
	st=$(curl -fsS -u "staging:${P[$k.staging_pw]}" "http://127.0.0.1:${P[$k.staging_http]}/statistics" | jq -r '"\(.CountStudies) studies, \(.CountInstances) instances"')
	say "$n: staging Orthanc now holds $st"
	row "imaging import $n" ok "${DONE[$k]}" "$(jq -r .successful_count <<<"${COUNTS[$k]}")/20 studies PACS -> staging ($st; ${POLLS[$k]} status tasks)"
done
# An FL job on net-1 fetches one accession from Trust_1's imaging-api.
k=trust1
mesh=$(kv "$DEMO_DIR/$k/kit.env" TRUST_INTERNAL_SERVICE_KEY)
accession=$(curl -fsS -H "X-Trust-Internal-Service-Key: $mesh" -H 'Content-Type: application/json' \
	-d "$(jq -nc --arg e "$img_enc" --arg q "$img_sql" '{encrypted_project_id: $e, query: $q}')" \
	"http://${P[$k.dapi]}/cohort/accession-ids" | jq -r '.accession_ids[0]')
path=$(curl -fsS -H "X-Trust-Internal-Service-Key: $mesh" -H 'Content-Type: application/json' \
	-d "$(jq -nc --arg e "$img_enc" --arg a "$accession" '{encrypted_central_hub_project_id: $e, accession_id: $a}')" \
	"http://${P[$k.imaging]}/download/images/net-1?resource_type=DICOM" | jq -r '.path')
say "Trust_1: accession $accession staged for an FL job on net-1: $(find "$path" -type f | wc -l) files under ${path#"$DEMO_DIR"/}"
row "project approval" ok "$(since "$t0")" "cohorts frozen (FL: ${FROZEN[trust1]} + ${FROZEN[trust2]} persons), imaging imported"

# ---------------------------------------------------------------------------
"$BIN/dev-hub" fl model init-logreg --features 5 --out "$DEMO_DIR/init.safetensors" >/dev/null
fl_job() { hub fl job submit --clients Trust_1,Trust_2 --project-id "$FL_PROJECT" --query-file examples/logreg/cohort.sql \
	--params-file examples/logreg/params.json --round-timeout 3m "$@" | tail -n1 | awk '{print $1}'; }
metrics() { # job round -> "loss L, AUC A, N samples"
	hub fl job show "$1" --json | jq -r --argjson r "$2" '.rounds[$r - 1] | "loss \(.metrics.loss * 1000 | round / 1000), AUC \(.metrics.auc * 1000 | round / 1000), \(.sample_count) samples"'
}
step "federated evaluation of the untrained model (metrics leave each trust through its trust-api's gate)"
t0=$(now)
eval0=$(fl_job --kind evaluate --model "$DEMO_DIR/init.safetensors")
hub fl job wait "$eval0" --timeout 4m >"$LOGS/fl-eval0.txt" || { cat "$LOGS/fl-eval0.txt"; die "evaluation failed"; }
m=$(metrics "$eval0" 1)
say "job $eval0: $m"
row "federated evaluation (zero model)" ok "$(since "$t0")" "$m"

# ---------------------------------------------------------------------------
step "federated training: 3 rounds of FedAvg (5 local epochs each), DP filter clip $DP_CLIP, σ $DP_SIGMA"
say "each round's figures are the global model's at the round's start, on both trusts' data"
t0=$(now)
train=$(fl_job --kind train --rounds 3 --model "$DEMO_DIR/init.safetensors")
printed=0
while :; do
	j=$(hub fl job show "$train" --json)
	nclosed=$(jq '[.rounds[] | select(.closed_at != null)] | length' <<<"$j")
	while ((printed < nclosed)); do
		printed=$((printed + 1))
		m=$(metrics "$train" "$printed")
		read -r opened closed < <(jq -r --argjson r "$printed" '.rounds[$r - 1] | "\(.opened_at) \(.closed_at)"' <<<"$j")
		secs=$(awk -v a="$(date -d "$opened" +%s.%N)" -v b="$(date -d "$closed" +%s.%N)" 'BEGIN{printf "%.1fs", b-a}')
		say "round $printed/3: $m (round took $secs)"
		row "training round $printed" "$(jq -r --argjson r "$printed" '.rounds[$r - 1] | "\(.ok)/2 ok"' <<<"$j")" "$secs" "$m"
	done
	state=$(jq -r .state <<<"$j")
	[[ $state == completed ]] && break
	[[ $state == failed || $state == cancelled ]] && { hub fl job show "$train" >&2; die "training $state"; }
	awk -v a="$t0" -v b="$(now)" 'BEGIN{exit !(b-a > 600)}' && die "training incomplete after 10 minutes"
	sleep 0.5
done
final=$(jq -r .final_model <<<"$j")
for k in "${KEYS[@]}"; do
	spent=$(grep '"privacy budget spent"' "$LOGS/$k-fl-client.log" | head -n1 |
		jq -r '"ε \(.epsilon_job * 10 | round / 10) spent by this job; project: \(.epsilon_spent * 10 | round / 10) spent, \(.epsilon_remaining * 10 | round / 10) left"')
	say "${NAMES[$(idx "$k")]}: privacy budget (δ $BUDGET_DELTA, budget ε $BUDGET_EPS): $spent"
done
say "(σ $DP_SIGMA on full-batch updates, q = 1, over 3 rounds costs a large ε: the demo shows the accounting, not a recommended setting)"
t1=$(now)
fin=$(fl_job --kind evaluate --model "$final")
hub fl job wait "$fin" --timeout 4m >"$LOGS/fl-eval-final.txt" || { cat "$LOGS/fl-eval-final.txt"; die "final evaluation failed"; }
m=$(metrics "$fin" 1)
say "final model $final: $m"
row "evaluation of the final model" ok "$(since "$t1")" "$m"
say "training and final evaluation took $(since "$t0")"

# ---------------------------------------------------------------------------
step "the ledgers: what left each trust (trust-api audit show / audit verify)"
for k in "${KEYS[@]}"; do
	n=${NAMES[$(idx "$k")]}
	dir=$DEMO_DIR/$k/trust-api/audit
	"$BIN/trust-api" audit show --dir "$dir" >"$LOGS/$k-ledger.txt"
	entries=$(($(wc -l <"$LOGS/$k-ledger.txt") - 1))
	say "$n: trust-api audit show ($entries entries; rules and full width in logs/$k-ledger.txt)"
	# tabwriter columns: SEQ TIME CHANNEL KIND TASK PROJECT SIZE SHA256 APPROVED_BY RULES
	awk -F '  +' '{if ($4 == "dp_spend") {$9 = $8; $8 = "-"}; t = $2; sub(/^[0-9-]+T/, "", t); printf "     %-4s %-9s %-15s %-19s %-9s %-5s %-13s %s\n", $1, t, $3, $4, substr($5, 1, 8), $7, $8, $9}' "$LOGS/$k-ledger.txt"
	say "$n: trust-api audit show --budget: $("$BIN/trust-api" audit show --dir "$dir" --budget | awk 'NR > 1 {print $NF}' | tr ',' ' ')"
	say "$n: trust-api audit verify"
	if out=$("$BIN/trust-api" audit verify --dir "$dir" 2>&1); then vr=ok; else vr=FAILED; fi
	sed 's/^/     /' <<<"$out"
	[[ $vr == ok ]] || die "$n: the ledger does not verify"
	row "ledger $n" "verify $vr" "" "$entries entries, $(grep -c ' dp_spend ' "$LOGS/$k-ledger.txt") dp_spend, $(grep -c ' model_update ' "$LOGS/$k-ledger.txt") model updates, $(grep -c 'Demo Reviewer' "$LOGS/$k-ledger.txt") reviewer-approved"
done

# ---------------------------------------------------------------------------
step "summary"
{
	printf '%-34s %-12s %-8s %s\n' STEP STATUS TIME RESULT
	for r in "${ROWS[@]}"; do IFS=$'\x1f' read -r a b c d <<<"$r"; printf '%-34s %-12s %-8s %s\n' "$a" "$b" "${c:--}" "$d"; done
	printf '%-34s %-12s %-8s %s\n' "whole demo" ok "$(since "$DEMO_START")" "logs and state in $DEMO_DIR"
} | tee "$DEMO_DIR/summary.txt" | sed 's/^/   /'
finished=1
