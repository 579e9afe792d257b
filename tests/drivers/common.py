"""Shared by the driver scripts run from tests/drivers.rs: connection settings from the
environment, result checks, and a main() that runs one named scenario and exits non-zero
(saying why) on any wrong result, driver error or hang."""

import faulthandler
import os
import sys
import time
import traceback


class Failure(Exception):
    """A wrong result: the message says what was expected and what came back."""


def setting(name, default=None):
    value = os.environ.get(name, default)
    if value is None:
        raise SystemExit(f"missing environment variable {name} (set by tests/drivers.rs)")
    return value


HOST = setting("PGWARD_HOST", "127.0.0.1")
PORT = int(setting("PGWARD_PORT"))
USER = setting("PGWARD_USER")
PASSWORD = setting("PGWARD_PASSWORD")
DATABASE = setting("PGWARD_DB")
# "transaction" or "session": what the pool mode of DATABASE is, for the backend-pid checks.
MODE = setting("PGWARD_MODE", "transaction")
CLIENTS = int(setting("PGWARD_CLIENTS", "6"))
# The pool size of DATABASE (server connections in transaction mode).
POOL_SIZE = int(setting("PGWARD_POOL_SIZE", "2"))
ROUNDS = int(setting("PGWARD_ROUNDS", "30"))
# Which of several concurrent processes this is (tests/drivers.rs may start more than one).
INDEX = int(setting("PGWARD_INDEX", "0"))
# The whole script must finish within this many seconds; then every thread's stack is dumped.
DEADLINE = float(setting("PGWARD_DEADLINE", "45"))


def libpq_conninfo():
    return (
        f"host={HOST} port={PORT} user={USER} password={PASSWORD} dbname={DATABASE} "
        "sslmode=disable connect_timeout=10"
    )


def check(cond, what):
    if not cond:
        raise Failure(what)


def check_eq(got, want, what):
    if got != want:
        raise Failure(f"{what}: got {got!r}, want {want!r}")


def report_backends(pids_by_client, what):
    """Per client, the set of backend pids its statements ran on during the concurrent part of a
    scenario: printed (in transaction mode clients usually move between servers, but timing
    decides); in session mode each client must keep one server of its own. That statements
    really run on servers that did not prepare them is made certain by `on_each_server` in
    the scripts, not by chance."""
    all_pids = set().union(*pids_by_client.values())
    if MODE == "session":
        for c, p in pids_by_client.items():
            check_eq(len(p), 1, f"{what}: backends of client {c} in session mode")
        check_eq(len(all_pids), len(pids_by_client), f"{what}: distinct backends in session mode")
    print(
        f"{what}: {len(pids_by_client)} clients on {len(all_pids)} server connections; "
        f"servers per client: {sorted(len(p) for p in pids_by_client.values())}"
    )


def main(scenarios):
    """Runs the scenario named by argv[1] (a function of no arguments, or a coroutine function)."""
    if len(sys.argv) != 2 or sys.argv[1] not in scenarios:
        raise SystemExit(f"usage: {sys.argv[0]} {{{'|'.join(scenarios)}}}")
    name = sys.argv[1]
    faulthandler.dump_traceback_later(DEADLINE, exit=True)
    start = time.monotonic()
    try:
        result = scenarios[name]()
        if hasattr(result, "__await__"):
            import asyncio

            asyncio.run(result)
    except Failure as e:
        print(f"FAIL {sys.argv[0]} {name} (process {INDEX}): {e}", file=sys.stderr)
        sys.exit(1)
    except BaseException:
        print(f"FAIL {sys.argv[0]} {name} (process {INDEX}): exception", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
    print(f"ok {name} (process {INDEX}) in {time.monotonic() - start:.2f}s")
