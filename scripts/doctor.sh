#!/usr/bin/env bash
# make doctor: one report of the trust node's pre-flight checks. Each service
# binary checks its own dependencies with its own configuration
# (`<service> doctor`); this script runs the four and prints their lines
# (PASS/WARN/FAIL/SKIP, with a fix under each WARN and FAIL) and a verdict.
#
#   scripts/doctor.sh --stack flip          # Swarm: exec into each service's task on this node
#   scripts/doctor.sh --compose trust1      # docker compose project: compose exec
#   scripts/doctor.sh --env-dir /etc/flip   # processes: bin/<service> doctor with DIR/<service>.env
#   scripts/doctor.sh                       # processes with the current environment
#
# Exit status: 0 when no check failed (warnings allowed), 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
SERVICES=(trust-api data-access-api imaging-api fl-client)
mode=native target= envdir= timeout=${DOCTOR_TIMEOUT:-15s}
while (($#)); do
	case $1 in
	--stack) mode=stack target=$2; shift 2 ;;
	--compose) mode=compose target=$2; shift 2 ;;
	--env-dir) envdir=$2; shift 2 ;;
	--services) IFS=, read -ra SERVICES <<<"$2"; shift 2 ;;
	-h | --help) sed -n '2,13p' "$0"; exit 0 ;;
	*) echo "doctor.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done

failed=0 ran=0
for s in "${SERVICES[@]}"; do
	case $mode in
	stack)
		c=$(docker ps -q --filter "label=com.docker.swarm.service.name=${target}_$s" | head -n1)
		if [[ -z $c ]]; then
			printf '%-4s  %-15s  %-26s  %s\n%-4s  %-15s  %-26s  fix: %s\n' FAIL "$s" "service running" "no running task of ${target}_$s on this node" \
				"" "" "" "docker service ps ${target}_$s; run the doctor on the node that runs the task"
			failed=1; continue
		fi
		docker exec "$c" "/usr/local/bin/$s" doctor -timeout "$timeout" ;;
	compose)
		docker compose -p "$target" exec -T "$s" "/usr/local/bin/$s" doctor -timeout "$timeout" ;;
	native)
		bin=bin/$s
		[[ -x $bin ]] || { echo "doctor.sh: $bin missing: run make build" >&2; failed=1; continue; }
		if [[ -n $envdir ]]; then
			[[ -f $envdir/$s.env ]] || { printf '%-4s  %-15s  %-26s  %s\n' SKIP "$s" "configuration" "no $envdir/$s.env"; continue; }
			(set -a; . "$envdir/$s.env"; set +a; exec "$bin" doctor -timeout "$timeout")
		else
			"$bin" doctor -timeout "$timeout"
		fi ;;
	esac
	rc=$?
	ran=$((ran + 1))
	((rc == 0)) || failed=1
done
echo
if ((failed)); then echo "doctor: FAIL ($ran of ${#SERVICES[@]} services checked): act on the fix lines above"; exit 1; fi
echo "doctor: PASS ($ran services checked; read any WARN lines above)"
