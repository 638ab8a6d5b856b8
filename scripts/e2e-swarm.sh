#!/usr/bin/env bash
# make e2e-swarm: the trust node as a Swarm stack on this host's Docker
# Engine, with images built locally (make images). It initialises a
# single-node swarm when the engine is not in one (and leaves it at the
# end), deploys swarm/stack.dev.yaml (dev-hub, seeded OMOP, PACS, staging),
# registers a trust and an FL client at the dev-hub, creates the kit's
# Swarm secrets, deploys swarm/stack.yaml with the dev overlay, waits for
# every service to be healthy (naming any that is not), runs a cohort query
# through the dev-hub as scripts/demo.sh does, runs the doctor in every
# service, and removes the stack, its secrets and volumes.
#
# Host ports: the dev-hub admin API on 127.0.0.1:28081 (swarm/stack.dev.yaml).
# E2E_KEEP=1 leaves the stack running. E2E_TIMEOUT (seconds, default 240)
# bounds the wait for healthy services.
set -euo pipefail
cd "$(dirname "$0")/.."

STACK=${E2E_STACK:-flip-e2e}
TIMEOUT=${E2E_TIMEOUT:-240}
export FLIP_IMAGE_PREFIX=${FLIP_IMAGE_PREFIX:-flip-trust/}
export FLIP_IMAGE_TAG=${FLIP_IMAGE_TAG:-local}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fail() { echo "e2e-swarm: $*" >&2; exit 1; }

command -v docker >/dev/null || fail "docker not found"
docker info >/dev/null 2>&1 || fail "the Docker Engine does not answer (docker info)"
for img in trust-api data-access-api imaging-api fl-client dev-hub dev-omop-db dev-orthanc; do
	docker image inspect "$FLIP_IMAGE_PREFIX$img:$FLIP_IMAGE_TAG" >/dev/null 2>&1 ||
		fail "image $FLIP_IMAGE_PREFIX$img:$FLIP_IMAGE_TAG missing: run make images"
done

inited=0 labelled=0 secrets=() work=$(mktemp -d /tmp/flip-e2e-swarm.XXXXXX)
cleanup() {
	local rc=$?
	if [[ ${E2E_KEEP:-0} == 1 ]]; then echo "E2E_KEEP=1: stack $STACK left running (docker stack rm $STACK)"; return; fi
	step "cleanup"
	docker stack rm "$STACK" >/dev/null 2>&1 || true
	# The stack's containers and network go asynchronously.
	for _ in $(seq 1 60); do
		[[ -z $(docker ps -aq --filter "label=com.docker.stack.namespace=$STACK") ]] &&
			! docker network inspect "${STACK}_node" >/dev/null 2>&1 && break
		sleep 1
	done
	for s in "${secrets[@]}"; do docker secret rm "$s" >/dev/null 2>&1 || true; done
	docker volume ls -q --filter "label=com.docker.stack.namespace=$STACK" | xargs -r docker volume rm >/dev/null 2>&1 || true
	((labelled)) && docker node update --label-rm flip.gpu self >/dev/null 2>&1 || true
	if ((inited)); then docker swarm leave --force >/dev/null && echo "left the swarm this run created"; fi
	rm -rf "$work"
	echo "e2e-swarm: cleaned up (exit $rc)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "1. swarm mode"
state=$(docker info --format '{{.Swarm.LocalNodeState}}')
case $state in
active) echo "engine already in a swarm: using it, leaving it as found" ;;
inactive)
	docker swarm init --advertise-addr 127.0.0.1 >/dev/null
	inited=1
	echo "initialised a single-node swarm (advertise 127.0.0.1); it is left at the end"
	;;
*) fail "swarm state is $state: expected active or inactive" ;;
esac
[[ $(docker info --format '{{.Swarm.ControlAvailable}}') == true ]] || fail "this node is not a swarm manager"
if [[ $(docker node inspect self --format '{{index .Spec.Labels "flip.gpu"}}') != true ]]; then
	docker node update --label-add flip.gpu=true self >/dev/null
	labelled=1
	echo "labelled this node flip.gpu=true for the run"
fi

step "2. secrets for the dev stores and the hub"
secret() { # secret NAME VALUE: creates a Swarm secret named $STACK-NAME
	local n="$STACK-$1"
	docker secret rm "$n" >/dev/null 2>&1 || true
	printf '%s' "$2" | docker secret create --label "com.docker.stack.namespace=$STACK" "$n" - >/dev/null
	secrets+=("$n")
}
rand() { head -c "${1:-24}" /dev/urandom | base64 | tr -d '=+/\n'; }
ADMIN_TOKEN=$(rand 32)
secret aes "$(head -c 32 /dev/urandom | base64)"
secret admin-token "$ADMIN_TOKEN"
secret reader-password "$(rand)"
secret orthanc-password "$(rand)"
export AES_KEY_BASE64_SECRET=$STACK-aes DEV_HUB_ADMIN_TOKEN_SECRET=$STACK-admin-token
export DATA_ACCESS_POSTGRES_PASSWORD_SECRET=$STACK-reader-password ORTHANC_PASSWORD_SECRET=$STACK-orthanc-password

# task_of SERVICE: the running container of the service's task on this node.
task_of() { docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_$1" | head -n1; }
# wait_healthy SECONDS SERVICE...: every service's container healthy (or,
# without a healthcheck, running); names the ones that are not.
wait_healthy() {
	local deadline=$((SECONDS + $1)) s c st pending; shift
	while :; do
		pending=()
		for s in "$@"; do
			c=$(task_of "$s")
			st=missing
			[[ -n $c ]] && st=$(docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$c" 2>/dev/null || echo missing)
			[[ $st == healthy || $st == running ]] || pending+=("$s:$st")
		done
		((${#pending[@]} == 0)) && return 0
		if ((SECONDS >= deadline)); then
			echo "e2e-swarm: not healthy after $1 s: ${pending[*]}" >&2
			for p in "${pending[@]}"; do
				s=${p%%:*}
				echo "--- ${STACK}_$s tasks:" >&2
				docker service ps --no-trunc --format '{{.Name}} {{.CurrentState}} {{.Error}}' "${STACK}_$s" 2>&1 | head -n 5 >&2
				echo "--- ${STACK}_$s last log lines:" >&2
				docker service logs --raw --tail 15 "${STACK}_$s" 2>&1 | sed 's/^/    /' >&2
			done
			return 1
		fi
		sleep 2
	done
}

step "3. deploy the dev stores and dev-hub (swarm/stack.dev.yaml)"
docker stack deploy --detach=true -c swarm/stack.dev.yaml "$STACK" 2>&1 | grep -v '^Creating\|^Updating' || true
wait_healthy "$TIMEOUT" dev-hub omop-db pacs orthanc-staging
hubc=$(task_of dev-hub)
hub() { docker exec -e DEV_HUB_ADMIN_URL=http://127.0.0.1:8081 -e "DEV_HUB_ADMIN_TOKEN=$ADMIN_TOKEN" "$hubc" /usr/local/bin/dev-hub "$@"; }
curl -fsS -o /dev/null "http://127.0.0.1:28081/health" && echo "dev-hub admin API on 127.0.0.1:28081 (host-mode port)"

step "4. register the trust and its FL client; the kit's keys become Swarm secrets"
hub trust add --name e2e-trust --hub-url http://dev-hub:8080/api >"$work/kit.env"
kit() { sed -n "s/^$1=//p" "$work/kit.env" | tail -n1 | tr -d "'\""; }
secret trust-api-key "$(kit TRUST_API_KEY)"
secret internal-key "$(kit TRUST_INTERNAL_SERVICE_KEY)"
secret fl-client-secret "$(hub fl client add --name Trust_1 | sed -n 's/^FL_CLIENT_SECRET=//p' | tr -d "'\"")"
export TRUST_API_KEY_SECRET=$STACK-trust-api-key TRUST_INTERNAL_SERVICE_KEY_SECRET=$STACK-internal-key FL_CLIENT_SECRET_SECRET=$STACK-fl-client-secret
export CENTRAL_HUB_API_URL=http://dev-hub:8080/api EXPECTED_TRUST_ID=$(kit EXPECTED_TRUST_ID)
export FL_SERVER_URL=http://dev-hub:8080 FL_CLIENT_NAME=Trust_1 FL_RUNNER=none
export OMOP_DB_SSLMODE=disable ORTHANC_USERNAME=staging PACS_AETITLE=PACS STAGING_AETITLE=STAGING
export POLL_INTERVAL_SECONDS=1 ENV=development DOCKER_GID=$(stat -c %g /var/run/docker.sock)
sed -E 's/^(TRUST_API_KEY|TRUST_INTERNAL_SERVICE_KEY|AES_KEY_BASE64)=.*/\1=<in a Swarm secret>/' "$work/kit.env" | grep -v '^\s*$' | sed 's/^/  /'

step "5. deploy the node (swarm/stack.yaml + swarm/stack.dev.yaml)"
docker stack deploy --detach=true -c swarm/stack.yaml -c swarm/stack.dev.yaml "$STACK" 2>&1 | grep -v '^Creating\|^Updating' || true
gpus=$(docker node inspect self --format '{{json .Description.Resources.GenericResources}}')
if [[ $gpus != *NVIDIA-GPU* ]]; then
	echo "this node advertises no NVIDIA-GPU generic resource: the run drops fl-client's GPU reservation (docker service update --generic-resource-rm)"
	docker service update --detach --generic-resource-rm NVIDIA-GPU "${STACK}_fl-client" >/dev/null
fi
wait_healthy "$TIMEOUT" trust-api data-access-api imaging-api fl-client dev-hub omop-db
docker stack services "$STACK" --format '  {{.Name}}  {{.Replicas}}  {{.Image}}'

step "6. the trust online at the hub"
for _ in $(seq 1 60); do
	hub trust list >"$work/trusts.txt" 2>&1 && grep -q online "$work/trusts.txt" && break
	sleep 1
done
sed 's/^/  /' "$work/trusts.txt"
grep -q online "$work/trusts.txt" || fail "the trust did not come online (trust-api logs: docker service logs ${STACK}_trust-api)"

step "7. a cohort_query round trip through the dev-hub"
sql="SELECT p.person_id, p.gender_source_value FROM person p JOIN condition_occurrence c ON c.person_id = p.person_id AND c.condition_concept_id = 201826"
qid=$(cat /proc/sys/kernel/random/uuid)
id=$(hub task submit --trust e2e-trust --type cohort_query --sql "$sql" --query-id "$qid" | tail -n1)
hub task wait "$id" --timeout 90s
hub results --query-id "$qid" | sed 's/^/  /'
hub task show "$id" | grep -q '"COMPLETED"' || fail "cohort query $id did not complete"

step "8. the doctor in every service (scripts/doctor.sh --stack $STACK)"
bash scripts/doctor.sh --stack "$STACK" || echo "(the doctor reports failures above; expected ones on this dev stack: plain-HTTP hub and FL server, no GPU)"

step "summary"
echo "  stack $STACK: every service healthy; trust online; cohort query $id COMPLETED"
