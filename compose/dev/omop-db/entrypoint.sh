#!/bin/sh
# Sets the reader's password from OMOP_READER_PASSWORD_FILE (a secret), then
# runs PostgreSQL in the foreground.
set -eu
if [ -n "${OMOP_READER_PASSWORD_FILE:-}" ]; then
	pg_ctl -D "$PGDATA" -w -o "-c listen_addresses=''" start >/dev/null
	psql -q -h /tmp -d omop -v ON_ERROR_STOP=1 -v pw="$(head -n1 "$OMOP_READER_PASSWORD_FILE")" <<'SQL'
ALTER ROLE data_analyst_reader PASSWORD :'pw';
SQL
	pg_ctl -D "$PGDATA" -w -m fast stop >/dev/null
fi
exec postgres -D "$PGDATA"
