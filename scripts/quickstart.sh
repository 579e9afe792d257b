#!/usr/bin/env bash
# pgward quickstart: builds pgward, starts a throwaway PostgreSQL cluster and pgward in front of
# it (config/pgward.toml), and shows what pgward allows and what it refuses.
#
#   scripts/quickstart.sh          run the demo, then stop everything
#   KEEP=1 scripts/quickstart.sh   run the demo and leave pgward and the cluster running
#   scripts/quickstart.sh stop     stop what a KEEP=1 run left running
#
# The ports are those of config/pgward.toml (PostgreSQL 55432, pgward 6432). If one is taken
# (6432 is also PgBouncer's default), QUICKSTART_PG_PORT / QUICKSTART_PGWARD_PORT choose others;
# pgward then runs with a copy of the config that has them.
#
# Everything lives in .pgward-quickstart/ in the repository (git-ignored) and is recreated on
# every run. Works as root (PostgreSQL then runs as the `postgres` OS user: initdb refuses root)
# and as a normal user with the PostgreSQL server binaries installed.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE="$REPO/.pgward-quickstart"
CERTS="$STATE/certs"
CONFIG="$REPO/config/pgward.toml"
# The defaults and the demo password match config/pgward.toml.
PG_PORT=${QUICKSTART_PG_PORT:-55432}
PGWARD_PORT=${QUICKSTART_PGWARD_PORT:-6432}
DEMO_PASSWORD=app-password
RUN_CONFIG=$CONFIG

PGWARD_PID=""
PG_DIR=""      # holds the cluster (data/), its log and its unix socket
PG_BIN=""      # directory of initdb, pg_ctl (and usually psql, pgbench)
PSQL="" PGBENCH=""
UNEXPECTED=0   # refusals that did not happen

# A PGOPTIONS in the caller's environment would make every demo connection fail (pgward refuses
# the `options` startup parameter); the demo sets it only where it shows that refusal.
unset PGOPTIONS

# --- output -------------------------------------------------------------------------------------

if [ -t 1 ]; then
    BOLD=$'\e[1m' DIM=$'\e[2m' GREEN=$'\e[32m' RED=$'\e[31m' RESET=$'\e[0m'
else
    BOLD="" DIM="" GREEN="" RED="" RESET=""
fi

section() { printf '\n%s==> %s%s\n' "$BOLD" "$*" "$RESET"; }
info() { printf '    %s\n' "$*"; }
die() {
    printf '%squickstart: %s%s\n' "$RED" "$*" "$RESET" >&2
    exit 1
}
# A demo step: what it shows, then its output indented.
allowed() { printf '\n%s--- allowed:%s %s\n' "$GREEN" "$RESET" "$*"; }
refused() { printf '\n%s--- refused:%s %s\n' "$RED" "$RESET" "$*"; }
indent() { sed 's/^/    /'; }

# --- helpers ------------------------------------------------------------------------------------

# True when something accepts TCP connections on 127.0.0.1:$1. Uses bash's /dev/tcp so it works
# without ss/netstat/lsof.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# Runs a command as the owner of the cluster: `postgres` when we are root. From /, since the
# current directory may be one `postgres` cannot enter (all paths given are absolute).
as_pg() {
    if is_root; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

random_password() {
    # 32 hex characters; od is in coreutils, so no openssl needed.
    od -An -tx1 -N16 /dev/urandom | tr -d ' \n'
}

# Sends SIGTERM to a process and waits up to $2 seconds for it, then SIGKILLs it.
stop_process() {
    local pid=$1 grace=$2 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    info "pid $pid did not stop within ${grace}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
}

# --- finding tools ------------------------------------------------------------------------------

# Sets PG_BIN to the directory holding initdb and pg_ctl: PATH first, then the newest
# /usr/lib/postgresql/<version>/bin (Debian keeps server binaries off PATH).
find_pg_bin() {
    local initdb dir
    if initdb=$(command -v initdb) && command -v pg_ctl >/dev/null; then
        # Resolve symlinks so psql/pgbench from the same installation are found next to it.
        PG_BIN=$(dirname "$(readlink -f "$initdb")")
        return 0
    fi
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
        PG_BIN=$dir
        return 0
    fi
    return 1
}

# psql/pgbench from the server's installation when there, else PATH. (Debian's /usr/bin/pgbench
# is a wrapper that fails unless the server package is installed.)
find_clients() {
    local tool var
    for tool in psql pgbench; do
        var=${tool^^}
        if [ -x "$PG_BIN/$tool" ]; then
            printf -v "$var" '%s' "$PG_BIN/$tool"
        elif command -v "$tool" >/dev/null; then
            printf -v "$var" '%s' "$(command -v "$tool")"
        else
            die "$tool not found (install PostgreSQL's client tools, e.g. scripts/install-deps.sh)"
        fi
    done
}

ensure_cargo() {
    if ! command -v cargo >/dev/null && [ -f "$HOME/.cargo/env" ]; then
        # shellcheck source=/dev/null
        . "$HOME/.cargo/env"
    fi
    command -v cargo >/dev/null || die "cargo not found: install Rust first (https://rustup.rs)"
}

ensure_postgres() {
    section "PostgreSQL"
    local need_install=0
    find_pg_bin || need_install=1
    # As root the cluster runs as the `postgres` OS user, which install-deps.sh creates.
    if is_root && ! id -u postgres >/dev/null 2>&1; then need_install=1; fi
    if [ "$need_install" -eq 1 ]; then
        info "PostgreSQL server binaries (or the postgres OS user) missing: running scripts/install-deps.sh"
        info "(it also installs cargo-nextest for the test suite, which can take a few minutes)"
        "$REPO/scripts/install-deps.sh" 2>&1 | indent
        find_pg_bin || die "PostgreSQL server binaries still not found after install-deps.sh"
    fi
    find_clients
    info "using $("$PG_BIN/pg_ctl" --version) from $PG_BIN"
}

build_pgward() {
    section "Building pgward (cargo build --release)"
    # cargo's own output is left alone: a first build takes a while and shows its progress. If
    # another cargo holds the build directory, this waits ("Blocking waiting for file lock").
    (cd "$REPO" && cargo build --release)
    PGWARD_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/pgward"
    case $PGWARD_BIN in /*) ;; *) PGWARD_BIN="$REPO/$PGWARD_BIN" ;; esac
    [ -x "$PGWARD_BIN" ] || die "build finished but $PGWARD_BIN is missing"
}

# --- the cluster --------------------------------------------------------------------------------

check_ports_free() {
    local port what
    for port in "$PG_PORT" "$PGWARD_PORT"; do
        port_in_use "$port" || continue
        [ "$port" = "$PG_PORT" ] && what="the quickstart's PostgreSQL" || what="pgward"
        printf '%squickstart: something already listens on 127.0.0.1:%s, which %s needs.%s\n' \
            "$RED" "$port" "$what" "$RESET" >&2
        if [ -f "$STATE/pgward.pid" ] || [ -f "$STATE/cluster-dir" ]; then
            echo "  If it is a previous KEEP=1 run, stop that with:  scripts/quickstart.sh stop" >&2
        fi
        echo "  Stop whatever it is (see: ss -ltnp 'sport = :$port'), or choose other ports:" >&2
        echo "  QUICKSTART_PG_PORT=55433 QUICKSTART_PGWARD_PORT=6433 scripts/quickstart.sh" >&2
        exit 1
    done
}

# Chooses PG_DIR. Normally $STATE itself; when root, $STATE is handed to `postgres`. If the
# `postgres` user cannot reach it (e.g. the repository is under /root, mode 700) or the socket
# path would be too long for a unix socket (~107 bytes), a directory under /tmp is used instead.
choose_pg_dir() {
    PG_DIR=$STATE
    if is_root; then
        chown postgres: "$STATE"
        if ! runuser -u postgres -- test -w "$STATE"; then
            info "user postgres cannot reach $STATE; putting the cluster in /tmp instead"
            PG_DIR=""
        fi
    fi
    if [ -n "$PG_DIR" ] && [ ${#PG_DIR} -gt 90 ]; then
        info "$STATE is too long a path for a unix socket; putting the cluster in /tmp instead"
        PG_DIR=""
    fi
    if [ -z "$PG_DIR" ]; then
        PG_DIR=$(mktemp -d /tmp/pgward-quickstart.XXXXXX)
        if is_root; then chown postgres: "$PG_DIR"; fi
    fi
    # Remembered for `scripts/quickstart.sh stop` and for cleanup.
    echo "$PG_DIR" >"$STATE/cluster-dir"
}

start_cluster() {
    section "Throwaway PostgreSQL cluster on 127.0.0.1:$PG_PORT"
    rm -rf "$STATE"
    mkdir -p "$STATE"
    choose_pg_dir
    info "data directory: $PG_DIR/data"
    # --no-sync: the cluster is thrown away, durability of initdb's files does not matter.
    as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth-local=trust \
        --auth-host=scram-sha-256 -E UTF8 --no-locale --no-sync >"$STATE/initdb.log" 2>&1 ||
        { cat "$STATE/initdb.log" >&2; die "initdb failed"; }
    # TCP only on loopback, and only with SCRAM: pgward must prove the backend password like any
    # client. The unix socket (trust) is for this script's setup as the superuser.
    as_pg tee -a "$PG_DIR/data/postgresql.conf" >/dev/null <<EOF

# --- pgward quickstart ---
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_DIR'
password_encryption = 'scram-sha-256'
EOF
    as_pg tee "$PG_DIR/data/pg_hba.conf" >/dev/null <<EOF
# pgward quickstart: superuser setup over the unix socket, everything else SCRAM over loopback.
local all all                trust
host  all all 127.0.0.1/32   scram-sha-256
EOF
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -w -t 60 start >/dev/null ||
        {
            tail -n 20 "$PG_DIR/postgres.log" >&2
            if grep -q "Address already in use" "$PG_DIR/postgres.log"; then
                # Nothing listens there (checked above), but 55432 lies in Linux's ephemeral
                # range: a recent outgoing connection may hold it in TIME-WAIT for a minute.
                echo "  Port $PG_PORT is held by a recent connection (see: ss -tan 'sport = :$PG_PORT')." >&2
                echo "  Wait a minute, or choose one below 32768:  QUICKSTART_PG_PORT=25432 scripts/quickstart.sh" >&2
            fi
            die "PostgreSQL did not start"
        }
    info "started (log: $PG_DIR/postgres.log)"
}

stop_cluster() {
    local dir=$1
    [ -f "$dir/data/postmaster.pid" ] || return 0
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
        info "pg_ctl stop failed; see $dir/postgres.log"
}

# psql as the cluster's superuser over the unix socket.
superuser_psql() {
    "$PSQL" -X -q -v ON_ERROR_STOP=1 -h "$PG_DIR" -p "$PG_PORT" -U postgres "$@"
}

create_backend_role() {
    section "Backend role app_rw, database appdb"
    local password
    password=$(random_password)
    # Written before the role exists so pgward never sees a role without its file. Mode 600: only
    # the user running pgward may read it.
    (umask 077 && printf '%s\n' "$password" >"$STATE/app_rw.password")
    chmod 600 "$STATE/app_rw.password"
    # The password goes to psql on stdin, never on a command line where `ps` would show it. It
    # is hex, so it needs no escaping inside the literal.
    superuser_psql -d postgres <<SQL
CREATE ROLE app_rw LOGIN PASSWORD '$password';
CREATE DATABASE appdb OWNER app_rw;
SQL
    superuser_psql -d appdb -U app_rw <<'SQL'
CREATE TABLE notes (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    body       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO notes (body) VALUES ('created by the quickstart');
SQL
    info "role app_rw has a random password, known only to $STATE/app_rw.password (mode 600)"
    info "the client user \"app\" (password \"$DEMO_PASSWORD\") exists only in config/pgward.toml"
}

# --- pgward -------------------------------------------------------------------------------------

# With non-default ports, pgward runs with a copy of the config in $STATE. Its relative
# backend_password_file ("../.pgward-quickstart/...") still points at the same file from there.
prepare_config() {
    [ "$PG_PORT" = 55432 ] && [ "$PGWARD_PORT" = 6432 ] && return 0
    RUN_CONFIG=$STATE/pgward.toml
    sed -e "s/^port = 55432\$/port = $PG_PORT/" \
        -e "s/^listen = \"127.0.0.1:6432\"\$/listen = \"127.0.0.1:$PGWARD_PORT\"/" \
        "$CONFIG" >"$RUN_CONFIG"
    grep -q "^listen = \"127.0.0.1:$PGWARD_PORT\"\$" "$RUN_CONFIG" &&
        grep -q "^port = $PG_PORT\$" "$RUN_CONFIG" ||
        die "could not set the ports in $RUN_CONFIG (config/pgward.toml changed shape?)"
    info "ports $PG_PORT/$PGWARD_PORT: using $RUN_CONFIG, a copy of config/pgward.toml"
}

make_certs() {
    info "development certificates (pgward certs dev — not for production) in $CERTS"
    "$PGWARD_BIN" certs dev --out "$CERTS" --client-user app --force | indent
}

start_pgward() {
    section "Starting pgward on 127.0.0.1:$PGWARD_PORT"
    local i
    # After the cluster: starting it gives the state directory a fresh start.
    make_certs
    rm -f "$STATE/audit.jsonl"  # this run's trail only
    "$PGWARD_BIN" check-config --config "$CONFIG" | indent
    prepare_config
    # setsid: its own session, so a Ctrl-C in this terminal reaches only the script, whose cleanup
    # then stops pgward (or, with KEEP=1, leaves it running as promised).
    local launcher=()
    if command -v setsid >/dev/null; then launcher=(setsid); fi
    # NO_COLOR: the log goes to a file, so no terminal colour codes in it.
    NO_COLOR=1 "${launcher[@]}" "$PGWARD_BIN" run --config "$RUN_CONFIG" >"$STATE/pgward.log" 2>&1 &
    PGWARD_PID=$!
    echo "$PGWARD_PID" >"$STATE/pgward.pid"
    for ((i = 0; i < 100; i++)); do
        if ! kill -0 "$PGWARD_PID" 2>/dev/null; then
            tail -n 20 "$STATE/pgward.log" >&2
            die "pgward exited during startup (log above: $STATE/pgward.log)"
        fi
        if port_in_use "$PGWARD_PORT"; then
            info "pid $PGWARD_PID, log: $STATE/pgward.log"
            return 0
        fi
        sleep 0.1
    done
    die "pgward did not listen on $PGWARD_PORT within 10s (log: $STATE/pgward.log)"
}

stop_pgward() {
    local pid=$1
    [ -n "$pid" ] || return 0
    stop_process "$pid" 10
    # Reap it if it is our child, so no zombie remains while we finish.
    wait "$pid" 2>/dev/null || true
}

# --- the demo -----------------------------------------------------------------------------------

# TLS with full verification of pgward's certificate (made by `pgward certs dev`).
PGWARD_CONN="host=localhost port=$PGWARD_PORT sslmode=verify-full sslrootcert=$CERTS/ca.crt sslcert=/nonexistent connect_timeout=5"

# psql through pgward as the demo user; extra arguments go to psql.
app_psql() {
    PGPASSWORD=$DEMO_PASSWORD "$PSQL" "$PGWARD_CONN user=app dbname=${DB:-appdb}" \
        -X -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -P pager=off "$@"
}

# psql through pgward as the read-only demo user.
reader_psql() {
    PGPASSWORD=$DEMO_PASSWORD "$PSQL" "$PGWARD_CONN user=reader dbname=appdb" \
        -X -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -P pager=off "$@"
}

# Runs a command that pgward should refuse: prints its error without stopping the script, and
# counts it if it unexpectedly succeeds.
expect_refusal() {
    local out
    if out=$("$@" 2>&1); then
        printf '%s\n' "$out" | indent
        printf '    %sUNEXPECTED: this should have been refused%s\n' "$RED" "$RESET"
        UNEXPECTED=$((UNEXPECTED + 1))
    else
        printf '%s\n' "$out" | indent
    fi
}

# Refused logins show no SQLSTATE in psql (libpq hides it at connection time); pgward logs it.
show_logged_refusal() {
    local line
    line=$(grep 'connection refused' "$STATE/pgward.log" | tail -n 1 |
        sed -e 's/\x1b\[[0-9;]*m//g' -e 's/.*connection refused/connection refused/' || true)
    [ -z "$line" ] || printf '    %spgward.log: %s%s\n' "$DIM" "$line" "$RESET"
}

demo_allowed() {
    section "Allowed through pgward (user app, dbname appdb, transaction pooling)"

    allowed "SELECT current_user — runs as backend role app_rw, whose password the client never saw"
    app_psql -c "SELECT current_user, session_user, current_database()" | indent

    allowed "TLS with SCRAM-SHA-256-PLUS: the login is bound to this TLS session (channel_binding=require)"
    PGCHANNELBINDING=require app_psql -c "SELECT 'channel binding ok' AS tls" | indent

    allowed "mTLS: user app_cert, authenticated by its client certificate alone (no password)"
    "$PSQL" "$PGWARD_CONN user=app_cert dbname=appdb sslcert=$CERTS/client.crt sslkey=$CERTS/client.key" \
        -X -c "SELECT current_user AS backend_role" | indent

    allowed "writing and reading"
    app_psql -e <<'SQL' | indent
INSERT INTO notes (body) VALUES ('written through pgward') RETURNING id;
SELECT id, body FROM notes ORDER BY id;
SQL

    allowed "a client's SET stays with that client"
    app_psql -e <<'SQL' | indent
SET statement_timeout = '1500ms';
SHOW statement_timeout;
SELECT pg_backend_pid() AS server_pid;
SQL
    info "a second client, on the same pool (and most likely the same server connection):"
    app_psql -e -c "SHOW statement_timeout" -c "SELECT pg_backend_pid() AS server_pid" | indent

    allowed "user reader (read-only policy): a SELECT"
    reader_psql -e -c "SELECT count(*) AS notes FROM notes" | indent

    allowed "LISTEN on the session-mode database (dbname appdb_session)"
    DB=appdb_session app_psql -e -c "LISTEN quickstart" -c "SELECT 'listening' AS status" | indent
}

demo_refused() {
    section "Refused by pgward"

    refused "wrong password for app (28P01)"
    expect_refusal env PGPASSWORD=not-the-password "$PSQL" "$PGWARD_CONN user=app dbname=appdb" -X -c "SELECT 1"
    show_logged_refusal

    refused "unknown user mallory (28P01, the same message: users cannot be enumerated)"
    expect_refusal env PGPASSWORD=guess "$PSQL" "$PGWARD_CONN user=mallory dbname=appdb" -X -c "SELECT 1"
    show_logged_refusal

    refused "plaintext (sslmode=disable): TLS is required (28000)"
    expect_refusal env PGPASSWORD=$DEMO_PASSWORD "$PSQL" \
        "host=127.0.0.1 port=$PGWARD_PORT sslmode=disable user=app dbname=appdb" -X -c "SELECT 1"
    show_logged_refusal

    refused "mTLS user app_cert without its certificate (28P01, like an unknown user)"
    expect_refusal env PGPASSWORD=guess "$PSQL" "$PGWARD_CONN user=app_cert dbname=appdb" -X -c "SELECT 1"
    show_logged_refusal

    refused "user reader (read-only policy): INSERT (42501: denied before it reaches PostgreSQL)"
    expect_refusal reader_psql -c "INSERT INTO notes (body) VALUES ('should not be written')"

    refused "user reader: a write hidden in a CTE (42501)"
    expect_refusal reader_psql -c "WITH gone AS (DELETE FROM notes RETURNING *) SELECT count(*) FROM gone"

    refused "LISTEN in transaction mode (0A000: the next transaction may run on another connection)"
    expect_refusal app_psql -c "LISTEN quickstart"

    refused "the options startup parameter, PGOPTIONS='-c work_mem=1GB' (0A000: it would bypass pgward)"
    expect_refusal env PGOPTIONS='-c work_mem=1GB' PGPASSWORD=$DEMO_PASSWORD \
        "$PSQL" "$PGWARD_CONN user=app dbname=appdb" -X -c "SHOW work_mem"
    show_logged_refusal
}

demo_pgbench() {
    section "pgbench -M prepared through pgward: 20 clients, 5 seconds, transaction mode, pool_size 5"
    local out
    info "pgbench -i (creating the pgbench tables through pgward)"
    PGPASSWORD=$DEMO_PASSWORD "$PGBENCH" -i -q "$PGWARD_CONN user=app dbname=appdb" 2>&1 |
        tail -n 2 | indent
    info "pgbench -c 20 -j 4 -T 5 -M prepared (named prepared statements, on any of the 5 connections)"
    if out=$(PGPASSWORD=$DEMO_PASSWORD "$PGBENCH" -c 20 -j 4 -T 5 -n -M prepared \
        "$PGWARD_CONN user=app dbname=appdb" 2>&1); then
        grep -E '^(number of (transactions actually processed|failed)|latency average|tps)' <<<"$out" | indent
    else
        printf '%s\n' "$out" | tail -n 15 | indent
        die "pgbench failed"
    fi
    # The 20 clients shared appdb's pool: pool_size 5 (appdb_session may keep one more open from
    # the LISTEN demo, and user reader's read-only pool one).
    info "server connections app_rw has open on PostgreSQL after the run:"
    superuser_psql -d postgres -At -c \
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app_rw'" | indent
}

demo_audit() {
    section "The audit trail ($STATE/audit.jsonl): literals never appear, only normalized text"
    local file="$STATE/audit.jsonl"
    [ -f "$file" ] || { info "no audit file"; return; }
    info "$(wc -l <"$file") events; the read-only user's denied INSERT:"
    grep -m 1 '"statement.denied"' "$file" | indent
    info "an executed statement:"
    grep -m 1 '"statement.executed".*notes' "$file" | indent
    info "pgward audit verify (seq order and hash chain):"
    "$PGWARD_BIN" audit verify "$file" | indent
}

# --- exit ---------------------------------------------------------------------------------------

print_keep_instructions() {
    section "KEEP=1: pgward and PostgreSQL are still running"
    info "connect through pgward:"
    info "  PGPASSWORD=$DEMO_PASSWORD psql \"host=localhost port=$PGWARD_PORT user=app dbname=appdb sslmode=verify-full sslrootcert=$CERTS/ca.crt\""
    info "  psql \"host=localhost port=$PGWARD_PORT user=app_cert dbname=appdb sslmode=verify-full sslrootcert=$CERTS/ca.crt sslcert=$CERTS/client.crt sslkey=$CERTS/client.key\""
    info "  (dbname=appdb_session for session pooling)"
    info "connect to PostgreSQL directly as its superuser:"
    info "  psql -h $PG_DIR -p $PG_PORT -U postgres appdb"
    info "logs: $STATE/pgward.log, $PG_DIR/postgres.log"
    info "stop both: scripts/quickstart.sh stop"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "${KEEP:-0}" = 1 ] && [ -n "$PG_DIR" ]; then
        print_keep_instructions
        exit "$rc"
    fi
    if [ -n "$PGWARD_PID$PG_DIR" ]; then
        section "Cleaning up (set KEEP=1 to leave everything running)"
    fi
    if [ -n "$PGWARD_PID" ]; then
        stop_pgward "$PGWARD_PID"
        rm -f "$STATE/pgward.pid"
        info "pgward stopped"
    fi
    if [ -n "$PG_DIR" ]; then
        stop_cluster "$PG_DIR"
        if [ "$PG_DIR" != "$STATE" ]; then
            # The /tmp fallback: keep its log next to the rest, drop the cluster.
            cp "$PG_DIR/postgres.log" "$STATE/postgres.log" 2>/dev/null || true
            rm -rf "$PG_DIR"
        fi
        rm -f "$STATE/cluster-dir"
        info "PostgreSQL stopped (logs stay in $STATE until the next run)"
    fi
    exit "$rc"
}

# `scripts/quickstart.sh stop`: ends what a KEEP=1 run left running.
stop_kept() {
    local pid dir
    if [ ! -f "$STATE/pgward.pid" ] && [ ! -f "$STATE/cluster-dir" ]; then
        echo "nothing to stop: no KEEP=1 run is recorded in $STATE"
        return 0
    fi
    if [ -f "$STATE/pgward.pid" ]; then
        pid=$(cat "$STATE/pgward.pid")
        # Only signal it if it still is pgward (the pid may have been reused since).
        if grep -q pgward "/proc/$pid/cmdline" 2>/dev/null; then
            stop_process "$pid" 10
            echo "pgward (pid $pid) stopped"
        fi
        rm -f "$STATE/pgward.pid"
    fi
    if [ -f "$STATE/cluster-dir" ]; then
        dir=$(cat "$STATE/cluster-dir")
        find_pg_bin || die "PostgreSQL binaries not found"
        stop_cluster "$dir"
        [ "$dir" = "$STATE" ] || rm -rf "$dir"
        rm -f "$STATE/cluster-dir"
        echo "PostgreSQL ($dir) stopped"
    fi
}

main() {
    case ${1:-} in
        stop) stop_kept; return ;;
        "") ;;
        *) die "usage: scripts/quickstart.sh [stop]   (KEEP=1 leaves everything running)" ;;
    esac
    local started=$SECONDS
    cd "$REPO"
    [[ $PG_PORT =~ ^[0-9]+$ && $PGWARD_PORT =~ ^[0-9]+$ && $PG_PORT != "$PGWARD_PORT" ]] ||
        die "QUICKSTART_PG_PORT and QUICKSTART_PGWARD_PORT must be two different port numbers"
    ensure_cargo
    check_ports_free
    ensure_postgres
    build_pgward
    check_ports_free # again: the build can take a while
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    start_cluster
    create_backend_role
    start_pgward
    demo_allowed
    demo_refused
    demo_pgbench
    demo_audit
    section "Done in $((SECONDS - started))s"
    if [ "$UNEXPECTED" -gt 0 ]; then
        die "$UNEXPECTED refusal(s) did not happen: pgward let through something it should refuse"
    fi
}

main "$@"
