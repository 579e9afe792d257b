#!/usr/bin/env bash
# Memory per idle client: the resident set size of pgward and of PgBouncer holding 10,000
# idle, authenticated client connections.
#
#   bash benches/idle_rss.sh           10,000 clients per pooler; results in benches/results/
#   bash benches/idle_rss.sh --smoke   200 clients; results in $CARGO_TARGET_DIR/bench-smoke/
#
# It starts a throwaway PostgreSQL, PgBouncer and pgward with the settings of benches/compare.sh
# (benches/common.sh: transaction mode, pool size 20, SCRAM-SHA-256 against the same verifier,
# client limit 12,000 on both), then for each pooler in turn: one client runs `SELECT 1` (so the
# pool holds a server connection and lazy start-up allocations are made), VmRSS is read from
# /proc/PID/status, examples/idle_clients.rs opens the clients (plaintext, startup and SCRAM
# completed, then nothing sent) 64 logins at a time, and VmRSS is read again once all are up
# and again after they have closed. KiB per client = (RSS with clients - RSS before) / clients.
#
# Environment knobs: IDLE_CLIENTS [10000; --smoke 200], RESULTS_DIR [benches/results;
# --smoke $CARGO_TARGET_DIR/bench-smoke], SETTLE [3] seconds to wait before each reading,
# BENCH_PORT_BASE, KEEP_STATE, CARGO_TARGET_DIR (see benches/compare.sh).
set -euo pipefail

BENCH_NAME=idle_rss.sh
# shellcheck source=benches/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SMOKE=0
case ${1:-} in
    --smoke) SMOKE=1 ;;
    "") ;;
    *) die "usage: bash benches/idle_rss.sh [--smoke]" ;;
esac
if [ "$SMOKE" = 1 ]; then
    IDLE_CLIENTS=${IDLE_CLIENTS:-200}
    RESULTS_DIR=${RESULTS_DIR:-$TARGET_DIR/bench-smoke}
else
    IDLE_CLIENTS=${IDLE_CLIENTS:-10000}
    RESULTS_DIR=${RESULTS_DIR:-$REPO/benches/results}
fi
SETTLE=${SETTLE:-3}
IDLE_BIN=""
ROWS=()   # markdown table rows
FAILURES=0

build_idle_clients() {
    info "cargo build --release --example idle_clients"
    (cd "$REPO" && cargo build --release --quiet --example idle_clients) || die "building examples/idle_clients.rs failed"
    IDLE_BIN=$TARGET_DIR/release/examples/idle_clients
    [ -x "$IDLE_BIN" ] || die "$IDLE_BIN is missing after the build"
}

# One client, one query: the pool has its server connection before the first reading.
warm_up() {
    local target=$1
    PGPASSWORD=$BENCH_PASSWORD PGSSLMODE=disable "$PSQL" -X -q -At -h 127.0.0.1 \
        -p "${PORT_OF[$target]}" -U bench -d bench -c 'SELECT 1' >/dev/null ||
        die "SELECT 1 through $target failed"
}

open_fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

# measure TARGET PID: the three readings around IDLE_CLIENTS idle clients.
measure() {
    local target=$1 pid=$2
    section "$target (pid $pid): $IDLE_CLIENTS idle clients"
    warm_up "$target"
    sleep "$SETTLE"
    local before fds_before
    before=$(rss_kib "$pid") fds_before=$(open_fds "$pid")
    info "VmRSS before: $before KiB ($fds_before open files)"

    # The clients read stdin until EOF: they hold their connections while our end of the FIFO
    # stays open.
    local fifo=$STATE/hold-$target out=$STATE/idle-$target.out err=$STATE/idle-$target.err hold
    mkfifo "$fifo"
    local started_ns
    started_ns=$(date +%s%N)
    "$IDLE_BIN" "host=127.0.0.1 port=${PORT_OF[$target]} user=bench password=$BENCH_PASSWORD dbname=bench sslmode=disable" \
        "$IDLE_CLIENTS" 64 <"$fifo" >"$out" 2>"$err" &
    local client_pid=$!
    exec {hold}>"$fifo"
    local i
    for ((i = 0; i < 6000; i++)); do
        grep -q '^ready' "$out" 2>/dev/null && break
        kill -0 "$client_pid" 2>/dev/null || break
        sleep 0.1
    done
    local ready opened failed
    ready=$(grep -m 1 '^ready' "$out" || true)
    [ -n "$ready" ] || { exec {hold}>&-; cat "$err" >&2; die "idle_clients did not get ready against $target"; }
    read -r _ opened failed <<<"$ready"
    local connect_s
    connect_s=$(awk -v a="$started_ns" -v b="$(date +%s%N)" 'BEGIN {printf "%.1f", (b - a) / 1e9}')
    info "$opened connected, $failed failed, in ${connect_s}s$([ "$failed" -eq 0 ] || echo ": $(head -n 1 "$err")")"
    sleep "$SETTLE"
    local with fds_with hwm
    with=$(rss_kib "$pid") fds_with=$(open_fds "$pid") hwm=$(hwm_kib "$pid")
    info "VmRSS with the clients: $with KiB ($fds_with open files), peak (VmHWM) $hwm KiB"

    exec {hold}>&-
    wait "$client_pid" || true
    sleep "$SETTLE"
    local after
    after=$(rss_kib "$pid")
    info "VmRSS after they closed: $after KiB"

    local per_client
    per_client=$(awk -v a="$with" -v b="$before" -v n="$opened" 'BEGIN {if (n > 0) printf "%.1f", (a - b) / n; else print "—"}')
    info "=> $per_client KiB per idle client"
    [ "$failed" -eq 0 ] && [ "$opened" -eq "$IDLE_CLIENTS" ] || FAILURES=$((FAILURES + 1))
    printf '%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n' "$target" "$IDLE_CLIENTS" "$opened" "$failed" \
        "$before" "$with" "$hwm" "$after" "$per_client" "$connect_s" >>"$RESULTS_DIR/idle_rss.csv"
    ROWS+=("| $target | $opened | $before | $with | **$per_client** | $hwm | $after | $connect_s s |")
}

write_report() {
    local md=$RESULTS_DIR/idle_rss.md
    {
        echo "# Memory per idle client: pgward vs PgBouncer"
        echo
        [ "$SMOKE" = 0 ] || { echo "**Smoke pass** (\`--smoke\`): too few clients to mean anything."; echo; }
        echo "Made by \`bash benches/idle_rss.sh\` on $(date -u +%Y-%m-%d): $IDLE_CLIENTS idle client connections"
        echo "per pooler (plaintext, SCRAM-SHA-256 login completed, then nothing sent), opened 64 at a time by"
        echo "\`examples/idle_clients.rs\`. RSS is VmRSS from /proc/PID/status: before (after one \`SELECT 1\`),"
        echo "with the clients connected, and after they closed; KiB per client = (with - before) / clients."
        echo "pgward $PGWARD_REV (${BUILD_PROFILE:-release} build),"
        echo "PgBouncer $("$PGBOUNCER_BIN" --version | awk 'NR==1 {print $2}'); both in transaction mode, pool size $POOL_SIZE."
        echo
        echo "| pooler | clients | RSS before KiB | RSS with clients KiB | KiB per client | peak (VmHWM) KiB | RSS after close KiB | time to connect |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|"
        printf '%s\n' "${ROWS[@]}"
        echo
    } >"$md"
    info "$md"
    info "$RESULTS_DIR/idle_rss.csv"
}

main() {
    local started=$SECONDS
    section "Setting up ($IDLE_CLIENTS idle clients per pooler)"
    bench_init
    [ "$(ulimit -n)" -gt $((IDLE_CLIENTS + 100)) ] ||
        die "ulimit -n is $(ulimit -n): too low for $IDLE_CLIENTS clients (raise the hard limit)"
    build_idle_clients
    make_certs
    start_postgres
    create_bench_role
    start_pgbouncer
    start_pgward pgward
    mkdir -p "$RESULTS_DIR"
    echo "pooler,clients,opened,failed,rss_before_kib,rss_with_clients_kib,vmhwm_kib,rss_after_close_kib,kib_per_client,connect_s" >"$RESULTS_DIR/idle_rss.csv"
    measure pgward "${PID_OF[pgward]}"
    measure pgbouncer "$(pgbouncer_pid)"
    stop_everything
    write_report
    section "Done in $((SECONDS - started))s"
    [ "$FAILURES" -eq 0 ] || die "not every client connected (see the table and $STATE)"
}

main "$@"
