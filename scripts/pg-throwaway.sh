#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests, on loopback only, trust auth.
# It also speaks TLS, with a certificate made on the fly for 127.0.0.1 and
# localhost by a CA of its own (openssl), so clients can test sslmode=require,
# verify-ca and verify-full against it.
#
#   scripts/pg-throwaway.sh start   # prints the admin URL on stdout
#   scripts/pg-throwaway.sh url     # prints it again
#   scripts/pg-throwaway.sh ca      # prints the path of the CA certificate (PEM)
#   scripts/pg-throwaway.sh stop    # stops the server and deletes its data
#
# Typical use:
#   export BANKBRIDGE_TEST_PG_URL="$(scripts/pg-throwaway.sh start)"
#   cargo test -p bankbridge-store
#   scripts/pg-throwaway.sh stop
#
# Environment: PGPORT_TEST (default 55432; the next free port is taken if it is
# busy), BANKBRIDGE_PG_STATE (state file, default /tmp/bankbridge-pg.env).
# Messages go to stderr; only the URL goes to stdout.
set -euo pipefail

STATE="${BANKBRIDGE_PG_STATE:-/tmp/bankbridge-pg.env}"

log() { echo "pg-throwaway: $*" >&2; }
die() { log "$*"; exit 1; }

find_bin() {
    local name="$1" dir
    if command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
        return 0
    fi
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$dir/$name" ]; then
            echo "$dir/$name"
            return 0
        fi
    done
    return 1
}

ensure_postgres() {
    if ! command -v openssl >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "openssl not found: installing Debian's openssl package"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >&2
    fi
    command -v openssl >/dev/null 2>&1 || die "openssl not found: install it (apt-get install openssl)"
    if find_bin initdb >/dev/null && find_bin pg_ctl >/dev/null; then
        return 0
    fi
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "PostgreSQL server not found: installing Debian's postgresql package"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    fi
    find_bin initdb >/dev/null && find_bin pg_ctl >/dev/null ||
        die "initdb/pg_ctl not found on PATH nor in /usr/lib/postgresql/*/bin: install PostgreSQL (apt-get install postgresql)"
}

# Run a PostgreSQL tool as a non-root user: the server refuses to run as root.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

port_busy() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

url_for() { echo "postgres://postgres@127.0.0.1:$1/postgres"; }

# A CA and a server certificate for 127.0.0.1 and localhost, in $1; the
# server's key belongs to the postgres user, mode 0600 (the server insists).
make_certificates() {
    local dir="$1"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=bankbridge throwaway CA" \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" >/dev/null 2>&1 || die "openssl: cannot make the CA"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -keyout "$dir/data/server.key" -out "$dir/server.csr" >/dev/null 2>&1 || die "openssl: cannot make the key"
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$dir/server.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
        -days 2 -extfile "$dir/server.ext" -out "$dir/data/server.crt" >/dev/null 2>&1 ||
        die "openssl: cannot sign the server certificate"
    chmod 600 "$dir/data/server.key"
    chmod 644 "$dir/ca.crt"
    if [ "$(id -u)" -eq 0 ]; then chown postgres "$dir/data/server.key" "$dir/data/server.crt"; fi
}

load_state() {
    [ -f "$STATE" ] || return 1
    # shellcheck disable=SC1090
    . "$STATE"
    [ -n "${PG_DATA:-}" ] && [ -n "${PG_PORT:-}" ]
}

running() {
    load_state && as_pg "$(find_bin pg_ctl)" -D "$PG_DATA" status >/dev/null 2>&1
}

cmd_start() {
    if running; then
        log "already running on port $PG_PORT (data $PG_DATA)"
        url_for "$PG_PORT"
        return 0
    fi
    ensure_postgres
    local initdb pg_ctl port dir
    initdb="$(find_bin initdb)"
    pg_ctl="$(find_bin pg_ctl)"
    port="${PGPORT_TEST:-55432}"
    local tries=0
    while port_busy "$port"; do
        tries=$((tries + 1))
        [ "$tries" -lt 50 ] || die "no free port from ${PGPORT_TEST:-55432} upwards"
        port=$((port + 1))
    done
    dir="$(mktemp -d /tmp/bankbridge-pg.XXXXXX)"
    chmod 755 "$dir"
    mkdir "$dir/data" "$dir/socket"
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
        chown -R postgres "$dir"
    fi
    as_pg "$initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --no-sync >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; rm -rf "$dir"; die "initdb failed"; }
    make_certificates "$dir"
    cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/socket'
ssl = on
ssl_cert_file = '$dir/data/server.crt'
ssl_key_file = '$dir/data/server.key'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    cat >"$dir/data/pg_hba.conf" <<EOF
local all all trust
host  all all 127.0.0.1/32 trust
EOF
    if [ "$(id -u)" -eq 0 ]; then chown postgres "$dir/data/pg_hba.conf"; fi
    printf 'PG_DIR=%q\nPG_DATA=%q\nPG_PORT=%q\n' "$dir" "$dir/data" "$port" >"$STATE"
    if ! as_pg "$pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >&2; then
        cat "$dir/server.log" >&2 || true
        as_pg "$pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$dir" "$STATE"
        die "the server did not start (log above)"
    fi
    log "started PostgreSQL on 127.0.0.1:$port (data $dir/data); stop it with: $0 stop"
    url_for "$port"
}

cmd_stop() {
    if ! load_state; then
        log "nothing to stop (no state file $STATE)"
        return 0
    fi
    local pg_ctl
    if pg_ctl="$(find_bin pg_ctl)" && [ -d "$PG_DATA" ]; then
        as_pg "$pg_ctl" -D "$PG_DATA" -m fast -w stop >&2 || log "pg_ctl stop failed (already stopped?)"
    fi
    case "${PG_DIR:-}" in
        /tmp/bankbridge-pg.*) rm -rf "$PG_DIR" ;;
        *) log "not deleting unexpected data folder ${PG_DIR:-?}" ;;
    esac
    rm -f "$STATE"
    log "stopped"
}

cmd_url() {
    running || die "not running: start it with $0 start"
    url_for "$PG_PORT"
}

cmd_ca() {
    running || die "not running: start it with $0 start"
    echo "$PG_DIR/ca.crt"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    url) cmd_url ;;
    ca) cmd_ca ;;
    *)
        echo "usage: $0 start|stop|url|ca" >&2
        exit 2
        ;;
esac
