#!/usr/bin/env bash
# Side-by-side benchmark: PostgreSQL direct vs PgBouncer vs pgward, on this machine.
#
#   bash benches/compare.sh            the full comparison (default: 3 rounds x 10 s per run, ~25 min)
#   bash benches/compare.sh --smoke    a short pass over every target and scenario (CI; ~2-3 min)
#
# It starts, in a state directory under /tmp, a throwaway PostgreSQL (SCRAM over TCP, TLS on,
# max_connections 800), PgBouncer (installed with apt when missing) and several pgward instances
# (release build), all with equivalent settings: transaction mode, pool size $POOL_SIZE,
# SCRAM-SHA-256 client authentication against the same verifier, TLS when the client asks for it
# (same development certificate), plaintext to PostgreSQL. The pgward instances:
#   pgward           defaults (reset_on_handover = true): the main row
#   pgward-noreset   reset_on_handover = false (what the hand-over reset costs)
#   pgward-policy    an enforced statement policy: an allowlist learned from pgbench itself
#                    (learn mode, then `pgward allowlist build`), with replace_literals
#   pgward-audit     [audit] statements = "all" to a file
# and a second PgBouncer, pgbouncer-reset, with server_reset_query = DISCARD ALL and
# server_reset_query_always = 1: PgBouncer giving the guarantee pgward's default gives (no
# client finds another's session state), which PgBouncer skips in transaction mode by default.
# And, for select-only over the simple protocol with $CLIENTS clients, a bare relay
# (examples/null_relay.rs: copies bytes, one server connection per client, no pooling): what
# relaying through any tokio process costs on this machine, the floor under pgward's figures.
# Then pgbench runs every scenario against each of its targets in turn — interleaved
# (direct, PgBouncer, pgward, … then again, each round starting one target further on), ROUNDS
# times; a TPC-B-like run starts from freshly vacuumed tables — and the results go to
# $RESULTS_DIR: compare.md (median TPS, average and p99 latency, ratios to direct and to
# PgBouncer), compare.csv (one row per run) and compare.png (median TPS per scenario).
# p99 comes from pgbench's per-transaction logs (--log), nearest rank.
#
# PgBouncer 1.18 cannot run pgbench -M prepared in transaction mode; that run is made anyway and
# reported as "fails: <pgbench's first error>". Any other failed run makes the script exit 1
# (after writing the results).
#
# Environment knobs (defaults in brackets; --smoke changes the ones marked *):
#   ROUNDS [3]*            rounds of the whole interleaved sequence
#   DURATION [10]*         seconds per pgbench run (plus 1 s, and 1 s per 30 clients, to connect)
#   CLIENTS [50]*          clients of most scenarios
#   MANY_CLIENTS [500]*    clients of the "many clients" scenarios
#   FEW_CLIENTS [10]*      clients of the scenario with fewer clients than the pool has
#                          connections (no waiting: each client gets its own connection back)
#   JOBS [2]               pgbench threads (-j)
#   SCALE [10]*            pgbench scale factor (pgbench -i -s)
#   POOL_SIZE [20]         pool size of both poolers
#   ONLY [all]             a regular expression: run only the scenarios whose name matches
#   RESULTS_DIR [benches/results; --smoke: $CARGO_TARGET_DIR/bench-smoke]
#   BENCH_PORT_BASE [random in 21000-28999]   first port tried (free ports from there)
#   KEEP_STATE [0]         1: keep the state directory (configs, logs) after a successful run
#   BUILD_PROFILE [release; --smoke: dev]   how pgward is built (dev: the test suite's build)
#   CARGO_TARGET_DIR       where pgward is built (and the plotting virtualenv is made)
set -euo pipefail

BENCH_NAME=compare.sh
# shellcheck source=benches/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SMOKE=0
case ${1:-} in
    --smoke) SMOKE=1 ;;
    "") ;;
    *) die "usage: bash benches/compare.sh [--smoke]" ;;
esac

if [ "$SMOKE" = 1 ]; then
    ROUNDS=${ROUNDS:-1} DURATION=${DURATION:-2} CLIENTS=${CLIENTS:-8}
    MANY_CLIENTS=${MANY_CLIENTS:-40} FEW_CLIENTS=${FEW_CLIENTS:-4} SCALE=${SCALE:-1}
    RESULTS_DIR=${RESULTS_DIR:-$TARGET_DIR/bench-smoke}
    BUILD_PROFILE=${BUILD_PROFILE:-dev}
else
    ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-10} CLIENTS=${CLIENTS:-50}
    MANY_CLIENTS=${MANY_CLIENTS:-500} FEW_CLIENTS=${FEW_CLIENTS:-10} SCALE=${SCALE:-10}
    RESULTS_DIR=${RESULTS_DIR:-$REPO/benches/results}
fi
JOBS=${JOBS:-2}
# Seconds added to -T for the connections: one, and one more per this many clients (run_one).
CLIENTS_PER_CONNECT_SECOND=30
PGBENCH_TIMEOUT=$((DURATION + 1 + MANY_CLIENTS / CLIENTS_PER_CONNECT_SECOND + 180))
ONLY=${ONLY:-}
VENV=$TARGET_DIR/bench-venv
CSV=""
FAILURES=0          # runs that failed and should not have

# --- scenarios ----------------------------------------------------------------------------------

# One scenario per line: name | script (select: -S, tpcb: the default script) | protocol (-M) |
# clients | plain or tls | connect per transaction (-C): yes/no | targets, in run order.
define_scenarios() {
    local c=$CLIENTS m=$MANY_CLIENTS f=$FEW_CLIENTS
    SCENARIOS=(
        "select-only, simple, $c clients|select|simple|$c|plain|no|direct pgbouncer pgbouncer-reset relay pgward pgward-noreset pgward-policy pgward-audit"
        "select-only, extended, $c clients|select|extended|$c|plain|no|direct pgbouncer pgbouncer-reset pgward"
        "select-only, prepared, $c clients|select|prepared|$c|plain|no|direct pgbouncer pgward pgward-policy"
        "TPC-B-like, simple, $c clients|tpcb|simple|$c|plain|no|direct pgbouncer pgbouncer-reset pgward pgward-policy pgward-audit"
        "select-only, simple, $m clients|select|simple|$m|plain|no|direct pgbouncer pgward"
        "select-only, simple, $f clients (pool not full)|select|simple|$f|plain|no|direct pgbouncer pgward pgward-noreset"
        "select-only, simple, $c clients, TLS|select|simple|$c|tls|no|direct pgbouncer pgbouncer-reset pgward"
        "select-only, simple, $m clients, TLS|select|simple|$m|tls|no|direct pgbouncer pgward"
        "connect per transaction (-C), select-only, $c clients|select|simple|$c|plain|yes|direct pgbouncer pgward"
        "connect per transaction (-C), select-only, $c clients, TLS|select|simple|$c|tls|yes|direct pgbouncer pgward"
    )
    if [ -n "$ONLY" ]; then
        local s kept=()
        for s in "${SCENARIOS[@]}"; do
            if [[ ${s%%|*} =~ $ONLY ]]; then kept+=("$s"); fi
        done
        [ "${#kept[@]}" -gt 0 ] || die "ONLY='$ONLY' matches no scenario"
        SCENARIOS=("${kept[@]}")
    fi
}

# Expected failures: PgBouncer (1.18) has no prepared-statement support in transaction mode.
expected_failure() { [[ $1 == pgbouncer* ]] && [ "$2" = prepared ]; }

# --- pgbench ------------------------------------------------------------------------------------

# pgbench as user bench against a target. PGSSLMODE is always set: libpq's default (prefer)
# would quietly use TLS wherever it is offered. A run that hangs is killed after
# PGBENCH_TIMEOUT seconds (exit status 124).
pgbench_to() {
    local target=$1 sslmode=$2
    shift 2
    PGPASSWORD=$BENCH_PASSWORD PGSSLMODE=$sslmode PGCONNECT_TIMEOUT=30 \
        timeout -k 10 "$PGBENCH_TIMEOUT" \
        "$PGBENCH" -h 127.0.0.1 -p "${PORT_OF[$target]}" -U bench "$@" bench
}

init_pgbench_tables() {
    section "pgbench -i -s $SCALE (direct)"
    pgbench_to direct disable -i -q -s "$SCALE" >"$STATE/pgbench-init.log" 2>&1 ||
        { cat "$STATE/pgbench-init.log" >&2; die "pgbench -i failed"; }
    tail -n 1 "$STATE/pgbench-init.log" | sed 's/^/    /'
}

# The policy's allowlist: pgward in learn mode sees every statement pgbench sends (each script,
# each protocol, and pgbench's own start-up query), then `pgward allowlist build` turns that into
# the allowlist pgward-policy enforces. replace_literals: -M simple sends values as literals.
learn_allowlist() {
    section "Learning pgbench's statements (pgward learn mode) for the allowlist"
    local learned=$STATE/pgward/learned.jsonl allowlist=$STATE/pgward/allowlist.toml proto
    start_pgward learn --user 'policy = "bench"' --toml "[policies.bench]
mode = \"learn\"
learn_file = \"$learned\"
replace_literals = true"
    for proto in simple extended prepared; do
        { pgbench_to learn disable -n -S -M "$proto" -c 1 -t 20 &&
            pgbench_to learn disable -n -M "$proto" -c 1 -t 20; } >>"$STATE/learn.log" 2>&1 ||
            { tail -n 20 "$STATE/learn.log" >&2; die "pgbench through pgward in learn mode failed"; }
    done
    stop_pgward learn
    "$PGWARD_BIN" allowlist build --learned "$learned" --user bench --database bench \
        --replace-literals --out "$allowlist" >/dev/null
    "$PGWARD_BIN" allowlist check --replace-literals "$allowlist" >/dev/null ||
        die "pgward allowlist check refused $allowlist"
    info "$(grep -c '^\[\[statement\]\]' "$allowlist") statements in $allowlist"
}

start_targets() {
    section "Poolers"
    start_pgbouncer
    start_pgbouncer pgbouncer-reset 'server_reset_query = DISCARD ALL' 'server_reset_query_always = 1'
    build_null_relay
    start_null_relay relay
    start_pgward pgward
    start_pgward pgward-noreset --db 'reset_on_handover = false'
    start_pgward pgward-policy --user 'policy = "bench"' --toml "[policies.bench]
mode = \"enforce\"
allowlist = \"$STATE/pgward/allowlist.toml\"
replace_literals = true"
    start_pgward pgward-audit --toml "[audit]
sink = \"file\"
path = \"$STATE/pgward/audit.jsonl\"
statements = \"all\""
    # The policy really is enforced: a statement pgbench never sends is refused.
    local denied
    denied=$(PGPASSWORD=$BENCH_PASSWORD PGSSLMODE=disable "$PSQL" -X -At -h 127.0.0.1 \
        -p "${PORT_OF[pgward-policy]}" -U bench -d bench -c 'SELECT 42' 2>&1 || true)
    [[ $denied == *"statement denied by pgward policy"* ]] ||
        die "pgward-policy let a statement off its allowlist through: $denied"
    info "pgward-policy refuses what is not on the allowlist: ${denied#*ERROR:  }"
}

# How many statements pgward-audit recorded (it must have recorded some).
check_audit() {
    local n
    n=$(grep -c '"event":"statement.executed"' "$STATE/pgward/audit.jsonl" 2>/dev/null || true)
    [ "${n:-0}" -gt 0 ] || die "pgward-audit wrote no statement.executed events"
    info "pgward-audit wrote $n statement.executed events"
}

# A short unrecorded select-only run per target, with enough clients to fill the pools: what is
# measured is the steady state, not the opening of server connections (pgward derives the SCRAM
# key for each new server connection on its runtime threads, which stalls a slow dev build).
warm_up() {
    local clients=$((CLIENTS > 2 * POOL_SIZE ? CLIENTS : 2 * POOL_SIZE)) target
    section "Warm-up (unrecorded, $clients clients)"
    for target in direct pgbouncer pgbouncer-reset relay pgward pgward-noreset pgward-policy pgward-audit; do
        pgbench_to "$target" disable -n -S -c "$clients" -j "$JOBS" -T 3 >"$STATE/warmup-$target.log" 2>&1 ||
            { tail -n 5 "$STATE/warmup-$target.log" >&2; die "warm-up against $target failed"; }
    done
    info "done"
}

# "p99 max" latency in ms from pgbench's per-transaction logs (3rd column, µs; p99 by nearest
# rank). The maximum shows stalls that a p99 hides.
latency_tail_ms() {
    local dir=$1
    cat "$dir"/tx.* 2>/dev/null | awk '$3 ~ /^[0-9]+$/ {print $3}' | sort -n |
        awk '{v[NR] = $1}
             END {if (NR == 0) exit
                  r = int((NR * 99 + 99) / 100); if (r > NR) r = NR
                  printf "%.3f %.3f", v[r] / 1000, v[NR] / 1000}'
}

csv_field() { local s=${1//\"/\'}; printf '"%s"' "$s"; }

# run_one ROUND SCENARIO TARGET: one pgbench run, one CSV row.
run_one() {
    local round=$1 scenario=$2 target=$3
    local name script proto clients tls connect _targets
    IFS='|' read -r name script proto clients tls connect _targets <<<"$scenario"
    # pgbench's -T counts from before the clients connect (500 clients take seconds), while its
    # TPS excludes that time: without an allowance the measured window shrinks, even to nothing.
    local allowance=0
    [ "$connect" = yes ] || allowance=$((1 + clients / CLIENTS_PER_CONNECT_SECOND))
    local args=(-n -M "$proto" -c "$clients" -j "$((clients < JOBS ? clients : JOBS))" -T "$((DURATION + allowance))")
    [ "$script" = select ] && args+=(-S)
    [ "$connect" = yes ] && args+=(-C)
    local sslmode=disable
    [ "$tls" = tls ] && sslmode=require
    [ "$script" = select ] || reset_tpcb_tables
    local logdir=$STATE/txlog out
    rm -rf "$logdir" && mkdir -p "$logdir"
    out=$STATE/runs/$(printf 'r%s-%s-%s' "$round" "$(tr -c 'A-Za-z0-9' '_' <<<"$name")" "$target").out
    # In the background and waited for, so that a signal reaches the trap (and the cleanup)
    # at once; $! is timeout's pid, which passes a TERM on to pgbench.
    local rc=0
    PGPASSWORD=$BENCH_PASSWORD PGSSLMODE=$sslmode PGCONNECT_TIMEOUT=30 \
        timeout -k 10 "$PGBENCH_TIMEOUT" "$PGBENCH" -h 127.0.0.1 -p "${PORT_OF[$target]}" -U bench \
        "${args[@]}" --log --log-prefix="$logdir/tx" bench >"$out" 2>&1 &
    wait "$!" || rc=$?
    [ "$rc" -ne 124 ] || echo "compare.sh: pgbench did not finish within ${PGBENCH_TIMEOUT}s: killed" >>"$out"

    local tps lat conn txs err status p99 max window
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$out" | head -n 1)
    lat=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$out" | head -n 1)
    conn=$(sed -n -E 's/^(initial|average) connection time = ([0-9.]*) ms.*/\2/p' "$out" | head -n 1)
    txs=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out" | head -n 1)
    read -r p99 max <<<"$(latency_tail_ms "$logdir")" || true
    # The measured window: what pgbench divided by.
    window=$(awk -v n="${txs:-0}" -v t="${tps:-0}" 'BEGIN {if (t > 0) printf "%.1f", n / t}')
    err=$(grep -m 1 -E 'error|ERROR|FATAL|killed' "$out" | sed -E 's/^pgbench: (error: )?//; s/  +/ /g' || true)
    if [ "$rc" -eq 0 ] && [ -n "$tps" ]; then
        status=ok err=""
    else
        status=fail
        if [ -z "$err" ] && [ "$rc" -eq 0 ]; then
            err="no transaction completed in ${DURATION}s ($(grep -m 1 'actually processed' "$out" || echo 'no summary'))"
        fi
        [ -n "$err" ] || err="pgbench exited with status $rc"
        if expected_failure "$target" "$proto"; then
            status=expected-fail
        else
            FAILURES=$((FAILURES + 1))
        fi
    fi
    rm -rf "$logdir"
    printf '%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n' \
        "$round" "$(csv_field "$name")" "$script" "$proto" "$clients" "$tls" "$connect" "$target" \
        "$status" "$tps" "$lat" "$p99" "$max" "$conn" "$txs" "$window" "$(csv_field "$err")" >>"$CSV"
    if [ "$status" = ok ]; then
        printf '    %-16s %10.0f tps  avg %8s ms  p99 %8s ms  max %9s ms\n' "$target" "$tps" "$lat" "$p99" "$max"
    else
        printf '    %-16s %s: %s\n' "$target" "$status" "$err"
    fi
}

run_all() {
    CSV=$RESULTS_DIR/compare.csv
    mkdir -p "$RESULTS_DIR"
    echo "round,scenario,script,protocol,clients,tls,connect_per_tx,target,status,tps,latency_avg_ms,latency_p99_ms,latency_max_ms,connection_ms,transactions,measured_s,error" >"$CSV"
    local round scenario target i n
    local -a targets
    for ((round = 1; round <= ROUNDS; round++)); do
        for scenario in "${SCENARIOS[@]}"; do
            section "round $round/$ROUNDS: ${scenario%%|*}"
            read -r -a targets <<<"${scenario##*|}"
            n=${#targets[@]}
            # Each round starts one target further on: a target never always runs right after
            # the same one (and what that run left behind: dead rows, a vacuum starting), so
            # the order's drift spreads over every target instead of favouring the first.
            for ((i = 0; i < n; i++)); do
                target=${targets[$(((i + round - 1) % n))]}
                run_one "$round" "$scenario" "$target"
            done
        done
    done
}

# What pgbench does before a TPC-B-like run unless -n (it cannot here: a pooler's statement
# policy would refuse it): vacuum the small tables every transaction updates and empty the
# history. Done directly, so every target's run starts from the same tables.
reset_tpcb_tables() {
    superuser_psql -d bench -c 'VACUUM pgbench_branches' -c 'VACUUM pgbench_tellers' \
        -c 'TRUNCATE pgbench_history' >/dev/null 2>&1 ||
        info "resetting the TPC-B tables failed (the run goes on)"
}

# --- report -------------------------------------------------------------------------------------

# matplotlib in a virtualenv under the target dir (Debian's python3 is externally managed).
# Prints the python to use for the report; without matplotlib the report has no plot.
report_python() {
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
        echo "$VENV/bin/python"
        return
    fi
    {
        if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
            info "python3-venv missing: apt-get install -y python3-venv"
            local sudo=()
            is_root || sudo=(sudo)
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv >/dev/null || true
        fi
        info "creating $VENV with matplotlib (pip)"
        python3 -m venv --clear "$VENV" &&
            "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check matplotlib
    } >&2 || true
    if "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
        echo "$VENV/bin/python"
    else
        echo python3
    fi
}

write_report() {
    section "Report"
    local py cpu mode_flag=--require-plot
    py=$(report_python)
    [ "$SMOKE" = 0 ] || mode_flag=--smoke
    cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
    "$py" "$REPO/benches/compare_report.py" --csv "$CSV" --md "$RESULTS_DIR/compare.md" \
        --png "$RESULTS_DIR/compare.png" \
        --meta "date=$(date -u +%Y-%m-%dT%H:%MZ)" \
        --meta "machine=$(nproc) CPUs ($cpu), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo); pgbench, PostgreSQL and the pooler share it" \
        --meta "pgward=$PGWARD_REV (${BUILD_PROFILE:-release} build)" \
        --meta "PgBouncer=$("$PGBOUNCER_BIN" --version | awk 'NR==1 {print $2}')" \
        --meta "PostgreSQL=$("$PG_BIN/postgres" --version | awk '{print $3}') (synchronous_commit off, shared_buffers 256MB, max_connections $PG_MAX_CONNECTIONS)" \
        --meta "runs=$ROUNDS rounds x ${DURATION}s, interleaved, the order rotated each round; pgbench -j $JOBS, scale $SCALE" \
        --meta "poolers=transaction mode, pool size $POOL_SIZE, SCRAM-SHA-256 clients, TLS on request, plaintext to PostgreSQL" \
        "$mode_flag"
    info "$RESULTS_DIR/compare.md"
    [ -f "$RESULTS_DIR/compare.png" ] && info "$RESULTS_DIR/compare.png"
    info "$CSV"
}

main() {
    local started=$SECONDS
    define_scenarios
    section "Setting up ($([ "$SMOKE" = 1 ] && echo smoke || echo full): $ROUNDS round(s) x ${DURATION}s, ${#SCENARIOS[@]} scenarios)"
    bench_init
    info "state in $STATE"
    make_certs
    start_postgres
    create_bench_role
    init_pgbench_tables
    learn_allowlist
    start_targets
    warm_up
    run_all
    if grep -q ',pgward-audit,' "$CSV"; then check_audit; fi
    stop_everything
    write_report
    section "Done in $((SECONDS - started))s"
    if [ "$FAILURES" -gt 0 ]; then
        die "$FAILURES run(s) failed that should have worked (see $CSV and the logs in $STATE)"
    fi
}

main "$@"
