#!/bin/sh
# Runs inside the database's container (docker exec -i -u postgres ... sh -c "<this text>"),
# reading three lines on stdin: "apply" or "check" (report only), the role's name, then its
# SCRAM-SHA-256 verifier - never the password, and the verifier never on a command line. Makes the
# archiver's own role, LOGIN REPLICATION and nothing more, and lets it in by password from the
# database's own networks, first in pg_hba.conf (in the data volume: it outlives the container).
# Connects as the image's superuser (POSTGRES_USER) over the container's socket. Prints one JSON
# line: what it changed (or would).
set -eu
IFS= read -r mode
IFS= read -r role
IFS= read -r verifier
case "$role" in *[!a-z0-9_]* | "" | [0-9]*) echo "role name '$role' is not a plain identifier" >&2; exit 2 ;; esac
case "$verifier" in 'SCRAM-SHA-256$'*) ;; *) echo "the password must come as a SCRAM-SHA-256 verifier" >&2; exit 2 ;; esac
case "$verifier" in *"'"*) echo "the verifier holds a quote" >&2; exit 2 ;; esac

superuser="${POSTGRES_USER:-postgres}"
sql() { psql -X -q -A -t -v ON_ERROR_STOP=1 -U "$superuser" -d "${POSTGRES_DB:-$superuser}"; }
changed=""

state=$(sql <<SQL
SELECT CASE
  WHEN NOT EXISTS (SELECT 1 FROM pg_authid WHERE rolname = '$role') THEN 'missing'
  WHEN (SELECT rolcanlogin AND rolreplication AND NOT rolsuper AND rolpassword IS NOT DISTINCT FROM '$verifier'
        FROM pg_authid WHERE rolname = '$role') THEN 'as wanted'
  ELSE 'differs' END
SQL
)
case "$state" in
  missing) statement="CREATE ROLE \"$role\" LOGIN REPLICATION PASSWORD '$verifier';" changed="role created," ;;
  differs) statement="ALTER ROLE \"$role\" LOGIN REPLICATION NOSUPERUSER PASSWORD '$verifier';" changed="role updated," ;;
  *) statement="" ;;
esac
if [ -n "$statement" ] && [ "$mode" = apply ]; then
  echo "$statement" | sql
fi

hba=$(echo "SHOW hba_file;" | sql)
marker="# weltgewebe.ops pg_archive: the WAL archiver's role, by password, from the database's own networks"
line_replication="host replication $role samenet scram-sha-256"
line_all="host all $role samenet scram-sha-256"
wanted=$(printf '%s\n%s\n%s' "$marker" "$line_replication" "$line_all")
if [ "$(head -n 3 "$hba")" != "$wanted" ]; then
  changed="$changed pg_hba.conf,"
  if [ "$mode" = apply ]; then
    # ours first (the first matching line decides), an older copy of ours dropped; written in
    # place, so the file keeps its owner and mode
    others=$(grep -v -x -F -e "$marker" -e "$line_replication" -e "$line_all" "$hba" || true)
    printf '%s\n%s\n' "$wanted" "$others" >"$hba"
    echo "SELECT pg_reload_conf();" | sql >/dev/null
  fi
fi
printf '{"changed": %s, "role": "%s", "hba_file": "%s", "detail": "%s"}\n' \
  "$([ -n "$changed" ] && echo true || echo false)" "$role" "$hba" "${changed:-as wanted}"
