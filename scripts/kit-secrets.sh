#!/usr/bin/env bash
# Prepares a host for compose/compose.yaml from a trust's kit .env: writes
# each key of the kit as a secret file under FLIP_ROOT/secrets (owner 65532,
# the services' user, mode 0400) and creates the data directories the
# services write (owner 65532). The kit itself keeps only non-secret
# settings afterwards if you pass --strip. Run as root.
#
#   FLIP_ROOT=/opt/flip scripts/kit-secrets.sh kit.env [--strip]
#
# Secrets not in the kit (the OMOP reader's and the staging Orthanc's
# passwords, FL_CLIENT_SECRET from the FL kit) are read from the
# environment when set: DATA_ACCESS_POSTGRES_PASSWORD, ORTHANC_PASSWORD,
# FL_CLIENT_SECRET, GRAFANA_ADMIN_PASSWORD.
set -euo pipefail
kit=${1:?usage: kit-secrets.sh KIT_ENV [--strip]}
root=${FLIP_ROOT:-/opt/flip}
keys=(TRUST_API_KEY TRUST_INTERNAL_SERVICE_KEY AES_KEY_BASE64 DATA_ACCESS_POSTGRES_PASSWORD ORTHANC_PASSWORD FL_CLIENT_SECRET GRAFANA_ADMIN_PASSWORD)
install -d -m 0700 "$root/secrets"
for d in data/trust-api data/data-access-api data/imaging-api data/fl-client data/images volumes/loki volumes/grafana volumes/prometheus volumes/alloy; do
	install -d -m 0750 "$root/$d"
done
chown 65532:65532 "$root"/data/* "$root/volumes/prometheus"
chown 10001:10001 "$root/volumes/loki"; chown 472:0 "$root/volumes/grafana"
for k in "${keys[@]}"; do
	v=$(sed -n "s/^$k=//p" "$kit" | tail -n1 | sed -e "s/^['\"]//" -e "s/['\"]$//")
	[[ -z $v ]] && v=${!k:-}
	[[ -z $v ]] && { echo "kit-secrets: $k not in the kit or the environment: skipped"; continue; }
	f=$root/secrets/${k,,}
	(umask 077; printf '%s\n' "$v" >"$f")
	owner=65532:65532; [[ $k == GRAFANA_ADMIN_PASSWORD ]] && owner=472:0 # Grafana's user
	chown "$owner" "$f"; chmod 0400 "$f"
	echo "kit-secrets: $f"
done
if [[ ${2:-} == --strip ]]; then
	pattern=$(IFS='|'; echo "^(${keys[*]})=")
	sed -i -E "/$pattern/d" "$kit"
	echo "kit-secrets: keys removed from $kit"
fi
