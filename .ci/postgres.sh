#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for the tests (Debian's `postgresql` package).
#   bash .ci/postgres.sh start   -> prints the URL the tests read from INSTRUCTRL_TEST_PG_URL
#   bash .ci/postgres.sh restart -> the same server and data, stopped and started (fault tests)
#   bash .ci/postgres.sh stop
set -euo pipefail
PGDIR=${INSTRUCTRL_PGDIR:-/tmp/instructrl-pg}
PORT=${INSTRUCTRL_PGPORT:-54329}
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -z "$BIN" ]; then echo "postgres.sh: no PostgreSQL under /usr/lib/postgresql" >&2; exit 1; fi
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case "${1:-}" in
  start)
    if [ -f "$PGDIR/data/postmaster.pid" ]; then as_owner "$BIN/pg_ctl" -D "$PGDIR/data" -m fast stop >/dev/null || true; fi
    rm -rf "$PGDIR" && mkdir -p "$PGDIR"
    if [ "$(id -u)" = 0 ]; then chown postgres "$PGDIR"; fi
    as_owner "$BIN/initdb" -D "$PGDIR/data" -A trust -U postgres >"$PGDIR/initdb.log"
    as_owner "$BIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w \
      -o "-p $PORT -k $PGDIR -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
    echo "postgresql+psycopg://postgres@127.0.0.1:$PORT/postgres"
    ;;
  restart)
    as_owner "$BIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w -m fast \
      -o "-p $PORT -k $PGDIR -c listen_addresses=127.0.0.1 -c fsync=off" restart >/dev/null
    ;;
  stop)
    if [ -f "$PGDIR/data/postmaster.pid" ]; then as_owner "$BIN/pg_ctl" -D "$PGDIR/data" -m fast stop >/dev/null; fi
    ;;
  *) echo "usage: $0 start|restart|stop" >&2; exit 2 ;;
esac
