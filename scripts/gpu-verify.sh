#!/usr/bin/env bash
# GPU verification (docs/gpu-verification.md): on a host with an NVIDIA GPU,
# its driver, Python 3 with PyTorch and safetensors, print fl-client's NVML
# inventory, then run one training round of examples/pytorch-job through the
# process runner on one GPU against a dev-hub on the same host. The data come
# from dev-hub's stand-in (a synthetic dataframe with the planted signal), as
# such a host has no OMOP database. Process jobs get a fixed PATH, so the job
# names the interpreter found here by its absolute path.
#
#   BIN=dir-with-fl-client-and-dev-hub bash scripts/gpu-verify.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
work=$(mktemp -d /tmp/flip-gpu.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }
wait_http() { for _ in $(seq 1 200); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.05; done; echo "$1 did not come up"; exit 1; }

step "nvidia-smi -L"
nvidia-smi -L
step "fl-client gpus"
"$BIN/fl-client" gpus
step "fl-client gpus -json"
"$BIN/fl-client" gpus -json

export DEV_HUB_ADMIN_TOKEN=gpu-verification-admin-token-0123456789
export DEV_HUB_ADMIN_URL=http://127.0.0.1:18081
key=gpu-verification-mesh-key-0123456789abcdef
DEV_HUB_ADDR=127.0.0.1:18080 DEV_HUB_ADMIN_ADDR=127.0.0.1:18081 DEV_HUB_DATA_DIR=$work/hub \
	AES_KEY_BASE64=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8= "$BIN/dev-hub" serve >"$work/dev-hub.log" 2>&1 &
pids+=($!)
STANDIN_ADDR=127.0.0.1:18082 TRUST_INTERNAL_SERVICE_KEY=$key "$BIN/dev-hub" standin >"$work/standin.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:18081/health
wait_http http://127.0.0.1:18082/health

step "dev-hub fl client add --name GPU_Trust"
secret=$("$BIN/dev-hub" fl client add --name GPU_Trust | sed -n 's/^FL_CLIENT_SECRET=//p' | tr -d "'\"")
"$BIN/dev-hub" fl model init-logreg --features 5 --out "$work/init.safetensors"

FL_SERVER_URL=http://127.0.0.1:18080 FL_CLIENT_NAME=GPU_Trust FL_CLIENT_SECRET=$secret \
	TRUST_INTERNAL_SERVICE_KEY=$key DATA_ACCESS_API_URL=http://127.0.0.1:18082 FL_CLIENT_ADDR=127.0.0.1:18083 \
	FL_WORK_DIR=$work/fl FL_RUNNER=process FL_PROCESS_JOBS="pytorch-example=$(command -v python3) $PWD/examples/pytorch-job/train.py" \
	FL_POLL_WAIT_SECONDS=5 "$BIN/fl-client" >"$work/fl-client.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:18083/health
step "fl-client /gpus"
curl -fsS http://127.0.0.1:18083/gpus; echo

step "one training round of examples/pytorch-job on one GPU"
id=$("$BIN/dev-hub" fl job submit --kind train --clients GPU_Trust --rounds 1 --gpus 1 --job pytorch-example \
	--model "$work/init.safetensors" --query "SELECT 1" --params-file examples/logreg/params.json --round-timeout 5m | tail -n1)
status=0
"$BIN/dev-hub" fl job wait "$id" --timeout 5m || status=$?
"$BIN/dev-hub" fl job show "$id"

step "fl-client's log of the task (job output included)"
grep -E '"msg":"(task received|gpus leased|model fetched|dataframe staged|job output|job finished|update uploaded|result submitted|task failed)"' \
	"$work/fl-client.log" | sed -E -e 's/.*"msg":"([^"]*)"(.*)/\1 \2/' -e 's/"(service|version|job|kind)":"[^"]*",?//g' | cut -c1-260
exit $status
