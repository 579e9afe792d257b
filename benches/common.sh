# shellcheck shell=bash
# Shared by benches/compare.sh and benches/idle_rss.sh (sourced, not run): finding and
# installing the tools, a throwaway PostgreSQL, pgward and PgBouncer instances with equivalent
# settings, free ports, and cleaning up every process started.
#
# Everything runs from a state directory under /tmp ($STATE). As root, PostgreSQL and PgBouncer
# run as the `postgres` OS user (initdb and pgbouncer refuse root); their files are handed to it.
#
# After sourcing, the caller calls, in order:
#   bench_init            checks tools, builds pgward, makes $STATE, installs the cleanup trap
#   make_certs            development certificates (pgward certs dev) for PostgreSQL and the poolers
#   start_postgres        initdb + start (SCRAM over TCP, TLS on, max_connections $PG_MAX_CONNECTIONS)
#   create_bench_role     role and database `bench`, the password in $BENCH_PASSWORD
#   start_pgward NAME [TOML…]   a pgward instance; extra TOML goes into its config
#   start_pgbouncer [NAME [INI…]]   a PgBouncer instance (default name: pgbouncer); extra lines
#                         go into its [pgbouncer] section
# and reads $PORT_OF[name] for the port of "direct", each PgBouncer NAME and each pgward NAME.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR="$REPO/$TARGET_DIR" ;; esac

# Pool size and pool mode shared by both poolers.
POOL_SIZE=${POOL_SIZE:-20}
# Client connection limits of both poolers: above the 10,000 idle clients of idle_rss.sh.
POOLER_MAX_CLIENTS=${POOLER_MAX_CLIENTS:-12000}
PG_MAX_CONNECTIONS=${PG_MAX_CONNECTIONS:-800}
# First port to try; the next free ones are taken from there. Below Linux's ephemeral range
# (32768+), where the test suite's 127.0.0.1:0 listeners and client sockets live.
BENCH_PORT_BASE=${BENCH_PORT_BASE:-$((21000 + RANDOM % 8000))}

STATE=""          # /tmp/pgward-bench.XXXXXX: configs, logs, the cluster
PG_BIN="" PSQL="" PGBENCH="" PGWARD_BIN="" PGBOUNCER_BIN="" NULL_RELAY_BIN=""
BENCH_PASSWORD=""
BENCH_VERIFIER=""
declare -A PORT_OF=()       # target name -> client port
declare -A PID_OF=()        # pgward instance name -> pid
declare -A PGBOUNCER_PIDFILE_OF=()   # PgBouncer instance name -> its pidfile
PG_STARTED=0
NEXT_PORT=$BENCH_PORT_BASE
KEEP_STATE=${KEEP_STATE:-0}

# A PGOPTIONS or PGSSLMODE from the caller would change what every run measures.
unset PGOPTIONS PGSSLMODE PGHOST PGPORT PGUSER PGDATABASE PGPASSWORD PGSERVICE

# --- output -------------------------------------------------------------------------------------

section() { printf '\n==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf '%s: %s\n' "${BENCH_NAME:-bench}" "$*" >&2
    exit 1
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# Runs a command as the owner of the cluster and of PgBouncer's files: `postgres` when root.
# pam_limits resets the soft open-files limit under runuser, so it is raised again inside.
as_pg() {
    if is_root; then
        # shellcheck disable=SC2016 # expanded by the inner sh
        (cd / && runuser -u postgres -- sh -c 'ulimit -n "$0" 2>/dev/null; exec "$@"' "$(ulimit -n)" "$@")
    else
        "$@"
    fi
}

# Makes a file or directory ours-for-the-server: owned by postgres when root.
give_to_pg() {
    if is_root; then chown -R postgres: "$@"; fi
}

random_hex() { od -An -tx1 -N16 /dev/urandom | tr -d ' \n'; }

# True when something accepts TCP connections on 127.0.0.1:$1 (bash's /dev/tcp: no ss needed).
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Prints the next free port at or after NEXT_PORT and moves NEXT_PORT past it.
alloc_port() {
    local var=$1
    while port_in_use "$NEXT_PORT"; do NEXT_PORT=$((NEXT_PORT + 1)); done
    printf -v "$var" '%s' "$NEXT_PORT"
    NEXT_PORT=$((NEXT_PORT + 1))
}

# Waits until 127.0.0.1:$1 accepts connections; $2 is the pid that must stay alive meanwhile.
wait_for_port() {
    local port=$1 pid=${2:-} i
    for ((i = 0; i < 300; i++)); do
        port_in_use "$port" && return 0
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
        sleep 0.1
    done
    return 1
}

# Sends SIGTERM, waits up to $2 seconds, then SIGKILL.
stop_pid() {
    local pid=$1 grace=${2:-10} i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# Resident set size of a process in KiB (VmRSS), and its peak (VmHWM).
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# --- tools --------------------------------------------------------------------------------------

# PG_BIN: the directory of initdb/pg_ctl: PATH first, then the newest /usr/lib/postgresql/*/bin.
find_pg_bin() {
    local initdb dir
    if initdb=$(command -v initdb) && command -v pg_ctl >/dev/null; then
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

ensure_postgres() {
    if ! find_pg_bin || { is_root && ! id -u postgres >/dev/null 2>&1; }; then
        info "PostgreSQL server binaries (or the postgres OS user) missing: running scripts/install-deps.sh"
        bash "$REPO/scripts/install-deps.sh" | sed 's/^/    /'
        find_pg_bin || die "PostgreSQL server binaries not found after install-deps.sh"
    fi
    # psql/pgbench of the server's installation (Debian's /usr/bin ones are wrappers).
    PSQL=$PG_BIN/psql PGBENCH=$PG_BIN/pgbench
    [ -x "$PSQL" ] || PSQL=$(command -v psql) || die "psql not found"
    [ -x "$PGBENCH" ] || PGBENCH=$(command -v pgbench) || die "pgbench not found"
}

# PgBouncer from apt when missing (Debian bookworm has 1.18).
ensure_pgbouncer() {
    PGBOUNCER_BIN=$(command -v pgbouncer || true)
    [ -n "$PGBOUNCER_BIN" ] && return 0
    info "pgbouncer not found: apt-get install -y pgbouncer"
    local sudo=()
    is_root || sudo=(sudo)
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends pgbouncer >/dev/null ||
        { "${sudo[@]}" apt-get update >/dev/null &&
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends pgbouncer >/dev/null; } ||
        die "could not install pgbouncer"
    # The package starts a system PgBouncer on 6432; ours are separate instances.
    if command -v service >/dev/null; then "${sudo[@]}" service pgbouncer stop >/dev/null 2>&1 || true; fi
    PGBOUNCER_BIN=$(command -v pgbouncer) || die "pgbouncer still not found"
}

ensure_cargo() {
    if ! command -v cargo >/dev/null && [ -f "$HOME/.cargo/env" ]; then
        # shellcheck source=/dev/null
        . "$HOME/.cargo/env"
    fi
    command -v cargo >/dev/null || die "cargo not found: install Rust first (https://rustup.rs)"
}

# The commit pgward is built from, with "-dirty" when its sources differ from it. Taken at build
# time, and blind to benches/results: a report written over the committed one would otherwise
# call its own build dirty.
pgward_revision() {
    local rev
    rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null) || { echo unknown; return; }
    git -C "$REPO" diff --quiet HEAD -- . ':(exclude)benches/results' 2>/dev/null || rev+=-dirty
    echo "$rev"
}

# BUILD_PROFILE: release (the default) or dev (compare.sh --smoke: the test suite has built it).
# Sets PGWARD_BIN and PGWARD_REV (what was built).
build_pgward() {
    local profile=${BUILD_PROFILE:-release} args=(build --quiet) dir=release
    case $profile in
        release) args+=(--release) ;;
        dev) dir=debug ;;
        *) die "BUILD_PROFILE must be release or dev, not '$profile'" ;;
    esac
    PGWARD_REV=$(pgward_revision)
    info "cargo ${args[*]} (target dir $TARGET_DIR)"
    (cd "$REPO" && cargo "${args[@]}") || die "cargo ${args[*]} failed"
    PGWARD_BIN=$TARGET_DIR/$dir/pgward
    [ -x "$PGWARD_BIN" ] || die "build finished but $PGWARD_BIN is missing"
}

# The bare relay (examples/null_relay.rs), built like pgward: the floor of a tokio relay.
build_null_relay() {
    local profile=${BUILD_PROFILE:-release} args=(build --quiet --example null_relay) dir=release
    case $profile in
        release) args+=(--release) ;;
        dev) dir=debug ;;
    esac
    (cd "$REPO" && cargo "${args[@]}") || die "cargo ${args[*]} failed"
    NULL_RELAY_BIN=$TARGET_DIR/$dir/examples/null_relay
    [ -x "$NULL_RELAY_BIN" ] || die "build finished but $NULL_RELAY_BIN is missing"
}

# start_null_relay NAME: the bare relay in front of PostgreSQL (plaintext; one server connection
# per client; the client logs in to PostgreSQL through it).
start_null_relay() {
    local name=$1 port log=$STATE/$1.log
    alloc_port port
    "$NULL_RELAY_BIN" "127.0.0.1:$port" "127.0.0.1:${PORT_OF[direct]}" >"$log" 2>&1 &
    PID_OF[$name]=$!
    PORT_OF[$name]=$port
    wait_for_port "$port" "${PID_OF[$name]}" || { tail -n 20 "$log" >&2; die "$name did not start"; }
    info "bare relay $name on 127.0.0.1:$port (pid ${PID_OF[$name]})"
}

# Soft open-files limit up to the hard one: 500 clients (and 10,000 idle ones) need it.
raise_nofile() {
    local want=${1:-20000} hard
    hard=$(ulimit -Hn)
    if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then want=$hard; fi
    ulimit -n "$want" 2>/dev/null || warn "could not raise ulimit -n to $want (now $(ulimit -n))"
}

# --- state and cleanup --------------------------------------------------------------------------

make_state() {
    STATE=$(mktemp -d "${TMPDIR:-/tmp}/pgward-bench.XXXXXX")
    # postgres must be able to enter it (its own subdirectories hold the cluster and PgBouncer).
    chmod 755 "$STATE"
    mkdir -p "$STATE/pg" "$STATE/pgbouncer" "$STATE/pgward" "$STATE/runs"
    give_to_pg "$STATE/pg" "$STATE/pgbouncer"
}

stop_everything() {
    local name pid
    for name in "${!PID_OF[@]}"; do
        stop_pid "${PID_OF[$name]}" 10
        unset "PID_OF[$name]"
    done
    for name in "${!PGBOUNCER_PIDFILE_OF[@]}"; do
        if [ -s "${PGBOUNCER_PIDFILE_OF[$name]}" ]; then
            pid=$(cat "${PGBOUNCER_PIDFILE_OF[$name]}")
            if grep -q pgbouncer "/proc/$pid/cmdline" 2>/dev/null; then stop_pid "$pid" 10; fi
        fi
        unset "PGBOUNCER_PIDFILE_OF[$name]"
    done
    if [ "$PG_STARTED" = 1 ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$STATE/pg/data" -m immediate -w -t 30 stop >/dev/null 2>&1 ||
            warn "pg_ctl stop failed; see $STATE/pg/postgres.log"
        PG_STARTED=0
    fi
}

# The EXIT trap: stops every process this script started, then removes $STATE unless the run
# failed or KEEP_STATE=1 (its logs are what one needs to see why).
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # Children still running (a pgbench killed mid-run, a helper) go with their process group.
    jobs -p | xargs -r kill 2>/dev/null || true
    stop_everything
    if [ -n "$STATE" ] && [ -d "$STATE" ]; then
        if [ "$rc" -ne 0 ] || [ "$KEEP_STATE" = 1 ]; then
            warn "logs and configs kept in $STATE (remove it when done)"
        else
            rm -rf "$STATE"
        fi
    fi
    exit "$rc"
}

bench_init() {
    ensure_cargo
    ensure_postgres
    ensure_pgbouncer
    raise_nofile 20000
    build_pgward
    make_state
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# --- PostgreSQL ---------------------------------------------------------------------------------

start_postgres() {
    local dir=$STATE/pg port
    alloc_port port
    PORT_OF[direct]=$port
    as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        -E UTF8 --no-locale --no-sync >"$STATE/initdb.log" 2>&1 ||
        { cat "$STATE/initdb.log" >&2; die "initdb failed"; }
    # Throwaway and CPU-bound on purpose: synchronous_commit off keeps TPC-B from measuring the
    # disk's flush latency instead of the poolers. TLS uses the same dev certificate as the poolers.
    as_pg tee -a "$dir/data/postgresql.conf" >/dev/null <<EOF

# --- pgward benchmark ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = $PG_MAX_CONNECTIONS
shared_buffers = 256MB
synchronous_commit = off
password_encryption = 'scram-sha-256'
ssl = on
ssl_cert_file = '$dir/server.crt'
ssl_key_file = '$dir/server.key'
EOF
    as_pg tee "$dir/data/pg_hba.conf" >/dev/null <<EOF
local all all                trust
host  all all 127.0.0.1/32   scram-sha-256
EOF
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start >/dev/null ||
        { tail -n 20 "$dir/postgres.log" >&2; die "PostgreSQL did not start"; }
    PG_STARTED=1
    info "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (max_connections $PG_MAX_CONNECTIONS)"
}

superuser_psql() {
    "$PSQL" -X -q -v ON_ERROR_STOP=1 -h "$STATE/pg" -p "${PORT_OF[direct]}" -U postgres "$@"
}

# Role and database `bench`. Clients of all three targets log in as `bench` with the same
# password; both poolers log in to PostgreSQL as `bench` too.
create_bench_role() {
    BENCH_PASSWORD=$(random_hex)
    superuser_psql -d postgres -c "CREATE ROLE bench LOGIN PASSWORD '$BENCH_PASSWORD'" \
        -c "CREATE DATABASE bench OWNER bench" >/dev/null
    printf '%s\n' "$BENCH_PASSWORD" >"$STATE/bench.password"
    chmod 600 "$STATE/bench.password"
    # The verifier both poolers check clients against: PostgreSQL's own (pg_authid), as a
    # PgBouncer auth_file usually holds it. PgBouncer needs exactly that one to log in to
    # PostgreSQL with the client's SCRAM keys (its SCRAM pass-through).
    BENCH_VERIFIER=$(superuser_psql -d postgres -At -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'bench'")
    [[ $BENCH_VERIFIER == SCRAM-SHA-256\$* ]] || die "no SCRAM verifier for role bench: '$BENCH_VERIFIER'"
}

# `pgward certs dev`: a CA and a server certificate for 127.0.0.1/localhost. PostgreSQL and
# PgBouncer get copies they own (PostgreSQL refuses a key readable by others).
make_certs() {
    "$PGWARD_BIN" certs dev --out "$STATE/certs" >/dev/null
    local dir
    for dir in "$STATE/pg" "$STATE/pgbouncer"; do
        cp "$STATE/certs/server.crt" "$STATE/certs/server.key" "$dir/"
        chmod 600 "$dir/server.key"
        give_to_pg "$dir/server.crt" "$dir/server.key"
    done
}

# --- pgward -------------------------------------------------------------------------------------

# start_pgward NAME [--user 'key = value']… [--db 'key = value']… [--toml 'TOML']…
# Writes $STATE/pgward/NAME.toml — user `bench`, database `bench` in transaction mode with pool
# $POOL_SIZE, TLS when the client asks — with the extra keys added to the [[users]] entry, the
# [[databases]] entry, or the end of the file, and starts it (log: $STATE/pgward/NAME.log).
start_pgward() {
    local name=$1
    shift
    local db_extra="" user_extra="" toml_extra=""
    while [ $# -gt 0 ]; do
        case $1 in
            --db) db_extra+=$2$'\n' ;;
            --user) user_extra+=$2$'\n' ;;
            --toml) toml_extra+=$2$'\n' ;;
            *) die "start_pgward: unknown option $1" ;;
        esac
        shift 2
    done
    local port admin_port cfg=$STATE/pgward/$name.toml log=$STATE/pgward/$name.log
    alloc_port port
    alloc_port admin_port
    cat >"$cfg" <<EOF
# pgward benchmark instance "$name" (written by benches/common.sh)
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$admin_port"
max_client_connections = $POOLER_MAX_CLIENTS

# TLS when the client asks (PgBouncer: client_tls_sslmode = allow).
[client_tls]
mode = "allow"
cert = "$STATE/certs/server.crt"
key = "$STATE/certs/server.key"

[[users]]
name = "bench"
scram_verifier = "$BENCH_VERIFIER"
$user_extra
[[databases]]
name = "bench"
host = "127.0.0.1"
port = ${PORT_OF[direct]}
backend_user = "bench"
backend_password_file = "$STATE/bench.password"
pool_mode = "transaction"
pool_size = $POOL_SIZE
$db_extra
$toml_extra
EOF
    "$PGWARD_BIN" check-config -c "$cfg" >"$log" 2>&1 || { cat "$log" >&2; die "pgward $name: bad config $cfg"; }
    "$PGWARD_BIN" run -c "$cfg" >"$log" 2>&1 &
    PID_OF[$name]=$!
    PORT_OF[$name]=$port
    wait_for_port "$port" "${PID_OF[$name]}" || { tail -n 20 "$log" >&2; die "pgward $name did not start"; }
    info "pgward $name on 127.0.0.1:$port (pid ${PID_OF[$name]}, config $cfg)"
}

stop_pgward() {
    local name=$1
    [ -n "${PID_OF[$name]:-}" ] || return 0
    stop_pid "${PID_OF[$name]}" 30
    unset "PID_OF[$name]"
}

# --- PgBouncer ----------------------------------------------------------------------------------

# The same pool as pgward's: transaction mode, default_pool_size $POOL_SIZE, clients checked
# against the same SCRAM verifier (auth_file), the backend login by SCRAM with the client's keys
# (pass-through: pgward uses a password file instead, the same exchange for PostgreSQL), TLS
# when the client asks (client_tls_sslmode = allow) and plaintext to
# PostgreSQL (pgward's default; PgBouncer's server_tls_sslmode would otherwise be prefer).
# Per-connection log lines are off, as pgward has none; listen_backlog matches tokio's 1024.
start_pgbouncer() {
    local name=${1:-pgbouncer}
    shift || true
    local dir=$STATE/$name port pidfile extra
    extra=$(printf '%s\n' "$@")
    mkdir -p "$dir"
    # make_certs gave the first instance its copies; the others get their own.
    [ -f "$dir/server.key" ] || cp -p "$STATE/pgbouncer/server.crt" "$STATE/pgbouncer/server.key" "$dir/"
    alloc_port port
    PORT_OF[$name]=$port
    pidfile=$dir/pgbouncer.pid
    PGBOUNCER_PIDFILE_OF[$name]=$pidfile
    printf '"bench" "%s"\n' "$BENCH_VERIFIER" >"$dir/userlist.txt"
    cat >"$dir/pgbouncer.ini" <<EOF
; PgBouncer benchmark instance (written by benches/common.sh)
[databases]
bench = host=127.0.0.1 port=${PORT_OF[direct]} dbname=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
pidfile = $pidfile
logfile = $dir/pgbouncer.log
auth_type = scram-sha-256
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = $POOLER_MAX_CLIENTS
max_db_connections = 0
listen_backlog = 1024
client_tls_sslmode = allow
client_tls_cert_file = $dir/server.crt
client_tls_key_file = $dir/server.key
server_tls_sslmode = disable
log_connections = 0
log_disconnections = 0
log_pooler_errors = 1
$extra
EOF
    chmod 600 "$dir/pgbouncer.ini" "$dir/userlist.txt"
    give_to_pg "$dir"
    as_pg "$PGBOUNCER_BIN" -d "$dir/pgbouncer.ini" >"$STATE/$name-start.log" 2>&1 ||
        { cat "$STATE/$name-start.log" "$dir/pgbouncer.log" >&2 2>/dev/null; die "$name did not start"; }
    local pid
    for _ in $(seq 50); do [ -s "$pidfile" ] && break; sleep 0.1; done
    pid=$(cat "$pidfile" 2>/dev/null) || die "$name wrote no pidfile"
    wait_for_port "$port" "$pid" || { tail -n 20 "$dir/pgbouncer.log" >&2; die "$name did not start"; }
    info "$name: PgBouncer $("$PGBOUNCER_BIN" --version | awk 'NR==1 {print $2}') on 127.0.0.1:$port (pid $pid, $dir/pgbouncer.ini)"
}

pgbouncer_pid() { cat "${PGBOUNCER_PIDFILE_OF[${1:-pgbouncer}]}"; }
