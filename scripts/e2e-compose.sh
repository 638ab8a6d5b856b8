#!/usr/bin/env bash
# make e2e-compose: the trust node as a user deploys it. Builds the images
# locally (no registry), brings up compose/compose.yaml + compose.dev.yaml on
# this Docker Engine under its own project name, takes the kit from the
# dev-hub as a trust would (dev-hub trust add, fl client add; the keys become
# secret files), then from dev-hub runs a cohort query and an imaging
# project (persist_cohort, create_imaging, get_imaging_status until every
# study is in staging) through the containers, and checks the results. The
# stack and its volumes are always removed at the end, failed or not.
#
# Host ports (loopback only) are in 18000-18999: E2E_PORT_BASE (default
# 18000) + 20 trust-api, + 10 data-access-api, + 1 imaging-api, + 81 dev-hub
# admin. E2E_KEEP=1 leaves the stack up for a look (then: docker compose -p
# flip-e2e-images ... down -v).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
P=${E2E_PROJECT:-flip-e2e-images}
base=${E2E_PORT_BASE:-18000}
t0=$(date +%s)
step() { printf '\n== [%3ss] %s\n' "$(($(date +%s) - t0))" "$*"; }

if docker compose version >/dev/null 2>&1; then DC=(docker compose); else DC=(docker-compose); fi

step "0. a tampered image bundle is refused"
bash scripts/bundle-test.sh | sed 's/^/  /'

step "1. images (local base images, the build cache keeps unchanged ones)"
bash scripts/images.sh trust-api data-access-api imaging-api fl-client dev-hub dev-omop-db dev-orthanc | sed 's/^/  /'

work=$(mktemp -d /tmp/flip-e2e-compose.XXXXXX)
root=$work/flip
compose() { "${DC[@]}" -p "$P" --project-directory "$repo/compose" --env-file "$work/node.env" \
	-f "$repo/compose/compose.yaml" -f "$repo/compose/compose.dev.yaml" "$@"; }
cleanup() {
	rc=$?
	if ((rc != 0)); then
		echo "e2e-compose: failed; the last log lines of each service:"
		compose --profile seed logs --no-color --tail 25 2>/dev/null | sed 's/^/  /' || true
	fi
	if [[ ${E2E_KEEP:-0} == 1 ]]; then echo "E2E_KEEP=1: stack $P left running; state in $work"; exit $rc; fi
	compose --profile seed down -v --remove-orphans >/dev/null 2>&1 || true
	rm -rf "$work"
	echo "e2e-compose: stack $P removed (containers, networks, volumes) after $(($(date +%s) - t0))s"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# A stack left by an interrupted run goes first.
compose --profile seed down -v --remove-orphans >/dev/null 2>&1 || true

step "2. host layout under FLIP_ROOT=$root: data directories for uid 65532, secret files"
mkdir -p "$root/secrets" "$root/data/images"
for d in trust-api data-access-api imaging-api fl-client images; do mkdir -p "$root/data/$d"; done
chown -R 65532:65532 "$root/data"
chmod 700 "$root/secrets"
secret() { head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c "${1:-32}"; }
# put NAME VALUE: a secret file. The dev stores (PostgreSQL, Orthanc) run as
# their own users, so the files are world-readable inside the private dir.
put() { printf '%s\n' "$2" >"$root/secrets/$1"; chmod 444 "$root/secrets/$1"; }
aes=$(head -c 32 /dev/urandom | base64)
put aes_key_base64 "$aes"
put dev_hub_admin_token "$(secret 40)"
put data_access_postgres_password "$(secret 24)"
put orthanc_password "$(secret 24)"
for s in trust_api_key trust_internal_service_key fl_client_secret; do put "$s" pending; done
cat >"$work/node.env" <<ENV
FLIP_ROOT=$root
BASE_IMAGES_DOWNLOAD_DIR=$root/data/images
CENTRAL_HUB_API_URL=http://dev-hub:8080/api
FL_SERVER_URL=http://dev-hub:8080
FL_CLIENT_NAME=Trust_1
ORTHANC_USERNAME=staging
TRUST_API_PORT=$((base + 20))
DATA_ACCESS_API_PORT=$((base + 10))
IMAGING_API_PORT=$((base + 1))
DEV_HUB_ADMIN_PORT=$((base + 81))
DOCKER_GID=$(stat -c %g /var/run/docker.sock)
FL_SHM_SIZE=64mb
POLL_INTERVAL_SECONDS=0.5
IMPORT_CONCURRENCY=2
TRUST_LOG_LEVEL=INFO
PACS_SEED_STUDIES=20
ENV

# wait_healthy SERVICE...: until each container reports healthy (3 minutes).
wait_healthy() {
	local s id st
	for s in "$@"; do
		for _ in $(seq 1 180); do
			id=$(compose ps -q "$s" 2>/dev/null || true)
			st=$([[ -n $id ]] && docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id" 2>/dev/null || true)
			[[ $st == healthy ]] && break
			[[ $st == exited || $st == dead ]] && { echo "e2e-compose: $s $st"; return 1; }
			sleep 1
		done
		[[ $st == healthy ]] || { echo "e2e-compose: $s not healthy ($st)"; return 1; }
		echo "  $s healthy"
	done
}
hub() { compose exec -T dev-hub dev-hub "$@"; }

step "3. dev stores and the dev hub: compose up dev-hub omop-db pacs orthanc-staging"
compose up -d dev-hub omop-db pacs orthanc-staging 2>&1 | sed 's/^/  /'
wait_healthy dev-hub omop-db pacs orthanc-staging
compose run --rm pacs-seed 2>&1 | grep -v -e '^Creating' -e 'is up-to-date' | sed 's/^/  pacs-seed: /'

step "4. the kit: dev-hub trust add, dev-hub fl client add; keys written as secret files"
hub trust add --name e2e-trust --hub-url http://dev-hub:8080/api >"$work/kit.env"
kit() { sed -n "s/^$1=//p" "$work/kit.env" | tr -d "'\""; }
put trust_api_key "$(kit TRUST_API_KEY)"
put trust_internal_service_key "$(kit TRUST_INTERNAL_SERVICE_KEY)"
[[ $(kit AES_KEY_BASE64) == "$aes" ]] || { echo "e2e-compose: the kit's AES key is not the hub's"; exit 1; }
printf 'EXPECTED_TRUST_ID=%s\nTRUST_API_KEY_HEADER=%s\n' "$(kit EXPECTED_TRUST_ID)" "$(kit TRUST_API_KEY_HEADER)" >>"$work/node.env"
put fl_client_secret "$(hub fl client add --name Trust_1 | sed -n 's/^FL_CLIENT_SECRET=//p' | tr -d "'\"")"
echo "  trust $(kit EXPECTED_TRUST_ID) registered; FL client Trust_1 registered"

step "5. the trust node: compose up (trust-api, data-access-api, imaging-api, fl-client)"
compose up -d 2>&1 | sed 's/^/  /'
wait_healthy data-access-api imaging-api trust-api fl-client
for s in trust-api data-access-api imaging-api fl-client; do
	id=$(compose ps -q "$s")
	echo "  $s: user $(docker inspect -f '{{.Config.User}}' "$id"), read-only $(docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$id"), cap_drop $(docker inspect -f '{{.HostConfig.CapDrop}}' "$id")"
done
for _ in $(seq 1 60); do hub trust list >"$work/trusts.txt" 2>&1 && grep -q online "$work/trusts.txt" && break; sleep 1; done
grep -q online "$work/trusts.txt" || { cat "$work/trusts.txt"; echo "e2e-compose: the trust did not come online"; exit 1; }
sed 's/^/  /' "$work/trusts.txt"

step "6. cohort_query from dev-hub: statistics computed in the OMOP container"
qid=$(cat /proc/sys/kernel/random/uuid)
sql="SELECT p.person_id, p.gender_source_value FROM person p"
id=$(hub task submit --trust e2e-trust --type cohort_query --sql "$sql" --query-id "$qid" | tail -n1)
hub task wait "$id" --timeout 120s --interval 200ms >/dev/null || { hub task show "$id"; exit 1; }
hub results --query-id "$qid" >"$work/results.txt"
sed 's/^/  /' "$work/results.txt" | head -n 20
grep -q 'e2e-trust\|record_count\|count' "$work/results.txt" || { echo "e2e-compose: no cohort statistics at the hub"; exit 1; }

# task TYPE PAYLOAD: submits a task at the hub, waits and prints its result.
task() {
	local id
	id=$(hub task submit --trust e2e-trust --type "$1" --payload "$2" | tail -n1)
	hub task wait "$id" --timeout 120s --interval 200ms >/dev/null || { hub task show "$id" >&2; return 1; }
	hub task show "$id" | jq -r '.result // "null"'
}

step "7. imaging from dev-hub: persist_cohort, create_imaging, PACS -> staging"
project=$(cat /proc/sys/kernel/random/uuid)
img_sql="SELECT person_id, accession_id FROM image_occurrence ORDER BY image_occurrence_id LIMIT 20"
enc=$(hub seal "$project" | tail -n1)
task persist_cohort "$(jq -nc --arg e "$enc" --arg q "$img_sql" '{encrypted_project_id: $e, query: $q}')" | jq -c '{row_count, has_accessions}' | sed 's/^/  persist_cohort: /'
created=$(task create_imaging "$(jq -nc --arg p "$project" --arg t "$(kit EXPECTED_TRUST_ID)" --arg q "$img_sql" \
	'{project_id: $p, trust_id: $t, project_name: "e2e imaging", query: $q, users: []}')")
imaging_id=$(jq -r '.ID' <<<"$created")
echo "  create_imaging: imaging project $imaging_id"
encoded=$(printf %s "$img_sql" | base64 -w0 | tr '+/' '-_' | tr -d '=')
status_payload=$(jq -nc --arg i "$imaging_id" --arg q "$encoded" '{imaging_project_id: $i, encoded_query: $q}')
deadline=$(($(date +%s) + 240))
while :; do
	counts=$(task get_imaging_status "$status_payload" | jq -c '.import_status')
	[[ $(jq '.processing_count + .queued_count' <<<"$counts") == 0 ]] && break
	(($(date +%s) > deadline)) && { echo "e2e-compose: import incomplete: $counts"; exit 1; }
	sleep 1
done
echo "  import status: $counts"
ok=$(jq '.successful_count' <<<"$counts")
[[ $(jq '.failed_count + .queue_failed_count' <<<"$counts") == 0 && $ok -gt 0 ]] || { echo "e2e-compose: studies failed to import"; exit 1; }
pw=$(head -n1 "$root/secrets/orthanc_password")
staged=$(compose exec -T orthanc-staging bash -c "exec 3<>/dev/tcp/127.0.0.1/8042; printf 'GET /statistics HTTP/1.0\r\nAuthorization: Basic %s\r\n\r\n' \$(printf 'staging:$pw' | base64 -w0) >&3; cat <&3" | tail -n +1 | sed -n '/^{/,$p' | jq -c '{CountStudies, CountInstances}')
echo "  staging Orthanc /statistics: $staged"
[[ $(jq '.CountStudies' <<<"$staged") == "$ok" ]] || { echo "e2e-compose: staging holds $(jq '.CountStudies' <<<"$staged") studies, the import reported $ok"; exit 1; }

step "e2e-compose: passed in $(($(date +%s) - t0))s"
