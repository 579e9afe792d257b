"""psycopg 3 through pgward with prepare_threshold=0: every query run with execute() is prepared
the first time as `_pg3_<n>` (<n> counted per connection, so all connections use the same
names for different SQL) and run with Bind/Execute afterwards. In transaction mode each
connection's statements must follow it to whichever server it gets next.

Scenarios (argv[1]):
  threads     CLIENTS connections in threads, autocommit and not, queries in and out of
              transactions (committed, rolled back, failed), prepare=True on a default
              connection, executemany and pipeline mode (Parse/Bind/Execute without a Sync
              between them);
  eviction    prepared_max=2 with 5 distinct statements run several times: psycopg deallocates
              every evicted statement, first with the protocol Close message (libpq >= 17), then
              with SQL `DEALLOCATE name`, which pgward answers itself;
  discard     a client's DISCARD ALL (prepared, as psycopg does with prepare_threshold=0, and as a
              simple query) and DEALLOCATE ALL as a simple query, while other clients run
              prepared statements on the same server connections; more prepared queries after;
  deallocate  a client's DEALLOCATE ALL through the extended protocol (psycopg prepares it like
              any other query when prepare_threshold=0), then more prepared queries by it and by
              clients sharing its server connections;
  deallocate_one_server
              the same, deterministic, for a pool of one server connection;
  deallocate_other_client
              a client finds another client's server-side statement name in
              pg_prepared_statements and deallocates it through the extended protocol: the
              other client's statement must keep working.

Some checks read psycopg internals (`conn._prepared`, `_connection_base._HAS_SEND_CLOSE`) to
make sure the intended protocol path was taken.
"""

import threading

import psycopg
import psycopg._connection_base as connection_base

from common import (
    CLIENTS,
    ROUNDS,
    Failure,
    check,
    MODE,
    POOL_SIZE,
    report_backends,
    check_eq,
    libpq_conninfo,
    main,
)


def connect(autocommit=True, prepare_threshold=0):
    return psycopg.connect(
        libpq_conninfo(), autocommit=autocommit, prepare_threshold=prepare_threshold
    )


def one(conn, sql, params=None, **kw):
    row = conn.execute(sql, params, **kw).fetchone()
    check(row is not None, f"{sql!r}: no row")
    return row[0] if len(row) == 1 else row


def run_threads(target, n=CLIENTS):
    """Runs target(k) in n threads; re-raises the first failure."""
    errors = []

    def wrap(k):
        try:
            target(k)
        except BaseException as e:  # reported by the main thread
            errors.append((k, e))

    threads = [threading.Thread(target=wrap, args=(k,), daemon=True) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        k, e = errors[0]
        if len(errors) > 1:
            print(f"{len(errors)} threads failed; first: thread {k}")
        raise e


def on_each_server(conns, body, what):
    """Makes certain that every client runs its statements on every server connection, so on
    servers where it did not prepare them: extra connections hold all servers but one in open
    transactions, each client in turn runs `body(k, conn)` (which returns the backend pid it
    ran on, and must end outside a transaction) on the one left free, and so on for each
    server. Transaction mode only."""
    if MODE != "transaction":
        return
    # Not autocommit: the first query opens a transaction, which pins the server.
    holders = [psycopg.connect(libpq_conninfo()) for _ in range(POOL_SIZE)]
    pins = [one(h, "SELECT pg_backend_pid()") for h in holders]
    check_eq(len(set(pins)), POOL_SIZE, f"{what}: holders pin every server connection")
    for idx, h in enumerate(holders):
        h.commit()
        for k, conn in enumerate(conns):
            check_eq(body(k, conn), pins[idx], f"{what}: client {k} on the only free server")
        check_eq(one(h, "SELECT pg_backend_pid()"), pins[idx], f"{what}: pin again")
    for h in holders:
        h.commit()
        h.close()
    print(f"{what}: every client ran on each of the {POOL_SIZE} server connections in turn")


def threads():
    pids = {k: set() for k in range(CLIENTS)}
    with connect() as setup:
        setup.execute(
            "CREATE TABLE IF NOT EXISTS drivers_psycopg (k int, i int, v text, PRIMARY KEY (k, i))"
        )
        setup.execute("DELETE FROM drivers_psycopg")

    # Odd clients use psycopg's default (not autocommit: a transaction per unit of work).
    conns = [connect(autocommit=k % 2 == 0) for k in range(CLIENTS)]

    def worker(k):
        conn = conns[k]
        autocommit = conn.autocommit
        with connect(prepare_threshold=5) as lazy:
            for i in range(ROUNDS):
                check_eq(one(conn, "SELECT %s::int + %s", (i, k)), i + k, f"t{k} r{i} sum")
                s, pid = one(
                    conn, "SELECT %s::text || %s::text, pg_backend_pid()", (f"t{k}", str(i))
                )
                check_eq(s, f"t{k}{i}", f"t{k} r{i} concat")
                pids[k].add(pid)
                if not autocommit:
                    conn.commit()
                with conn.transaction():
                    a, pa = one(conn, "SELECT %s::int * 2, pg_backend_pid()", (i,))
                    b, pb = one(conn, "SELECT %s::int + %s, pg_backend_pid()", (i, k))
                    check_eq((a, b), (i * 2, i + k), f"t{k} r{i} in transaction")
                    check_eq(pb, pa, f"t{k} r{i} one server for the transaction")
                if i % 5 == 1:
                    # A rollback: psycopg then forgets its prepared statements and sends
                    # DEALLOCATE ALL, so the next queries are prepared again under new names.
                    with conn.transaction():
                        check_eq(one(conn, "SELECT %s::int + %s", (i, 100)), i + 100, f"t{k} r{i}")
                        raise psycopg.Rollback()
                if i % 7 == 2:
                    try:
                        one(conn, "SELECT 1 / %s::int", (0,))
                        raise Failure(f"t{k} r{i}: division by zero succeeded")
                    except psycopg.errors.DivisionByZero:
                        if not autocommit:
                            conn.rollback()
                    check_eq(one(conn, "SELECT 1 / %s::int", (1,)), 1, f"t{k} r{i} after error")
                    if not autocommit:
                        conn.commit()
                # prepare=True on a connection that would otherwise prepare after 5 runs.
                check_eq(
                    one(lazy, "SELECT %s::int - %s", (i, k), prepare=True), i - k,
                    f"t{k} r{i} prepare=True",
                )
                check_eq(
                    one(lazy, "SELECT %s::int * %s", (i, k), prepare=False), i * k,
                    f"t{k} r{i} prepare=False",
                )
                if i % 10 == 3:
                    with conn.transaction():
                        conn.cursor().executemany(
                            "INSERT INTO drivers_psycopg (k, i, v) VALUES (%s, %s, %s)",
                            [(k, i * 100 + j, f"v{j}") for j in range(10)],
                        )
                    n, total = one(
                        conn,
                        "SELECT count(*), sum(i) FROM drivers_psycopg"
                        " WHERE k = %s AND i / 100 = %s",
                        (k, i),
                    )
                    want = (10, sum(i * 100 + j for j in range(10)))
                    check_eq((n, total), want, f"t{k} r{i} rows")
                    if not autocommit:
                        conn.commit()
                if i % 10 == 6:
                    # Pipeline mode: several prepared queries sent before one Sync.
                    with conn.pipeline():
                        curs = [
                            conn.execute("SELECT %s::int + %s", (i, j)) for j in range(4)
                        ] + [conn.execute("SELECT %s::text || %s::text", (str(i), "p"))]
                    got = [c.fetchone()[0] for c in curs]
                    check_eq(got, [i + j for j in range(4)] + [f"{i}p"], f"t{k} r{i} pipeline")
                    if not autocommit:
                        conn.commit()

    run_threads(worker)
    report_backends(pids, "psycopg threads")

    def each(k, conn):
        check_eq(one(conn, "SELECT %s::int + %s", (3, k)), 3 + k, f"t{k} sum")
        with conn.transaction():
            check_eq(one(conn, "SELECT %s::int * 2, pg_backend_pid()", (k,))[0], 2 * k, "tx")
        s, pid = one(conn, "SELECT %s::text || %s::text, pg_backend_pid()", (f"t{k}", "x"))
        check_eq(s, f"t{k}x", f"t{k} concat")
        if not conn.autocommit:
            conn.commit()
        return pid

    on_each_server(conns, each, "psycopg threads")
    for conn in conns:
        conn.close()


EVICTION_QUERIES = [f"SELECT %s::int + {q}, pg_backend_pid()" for q in range(5)]


def eviction():
    pids = {k: set() for k in range(CLIENTS)}

    def worker(conn, k):
        for i in range(max(4, ROUNDS // 5)):
            for q, sql in enumerate(EVICTION_QUERIES):
                v, pid = one(conn, sql, (i * k,))
                check_eq(v, i * k + q, f"t{k} r{i} q{q}")
                pids[k].add(pid)
            with conn.transaction():
                for q in (4, 0, 2):
                    v, _ = one(conn, EVICTION_QUERIES[q], (k,))
                    check_eq(v, k + q, f"t{k} r{i} q{q} in transaction")
        # Only the last prepared_max statements are still prepared.
        check_eq(len(conn._prepared._names), 2, f"t{k} statements psycopg holds")

    def each(k, conn):
        for q, sql in enumerate(EVICTION_QUERIES):
            v, pid = one(conn, sql, (k,))
            check_eq(v, k + q, f"t{k} q{q}")
        return pid

    def phase(what):
        conns = [connect() for _ in range(CLIENTS)]
        for conn in conns:
            conn.prepared_max = 2
        run_threads(lambda k: worker(conns[k], k))
        on_each_server(conns, each, what)
        for conn in conns:
            conn.close()

    if connection_base._HAS_SEND_CLOSE:
        print(f"psycopg eviction with libpq {psycopg.pq.version()}: Close messages")
        phase("psycopg eviction (Close)")
    else:
        print(f"psycopg eviction: libpq {psycopg.pq.version()} has no Close (needs 17)")
    # The same, deallocating with SQL (what psycopg does with libpq < 17).
    connection_base._HAS_SEND_CLOSE = False
    print("psycopg eviction: DEALLOCATE statements")
    phase("psycopg eviction (DEALLOCATE)")
    report_backends(pids, "psycopg eviction")


def busy_clients(stop, pids, errors):
    """Other clients running prepared statements until `stop` is set, so the server
    connections a DISCARD/DEALLOCATE runs on also carry their statements."""

    def busy(k):
        try:
            with connect() as conn:
                i = 0
                while not stop.is_set():
                    v, pid = one(conn, "SELECT %s::int + %s, pg_backend_pid()", (i, k))
                    check_eq(v, i + k, f"busy client {k} r{i}")
                    pids[f"busy{k}"].add(pid)
                    check_eq(one(conn, "SELECT %s::text || 'x'", (str(i),)), f"{i}x", f"busy {k}")
                    i += 1
        except BaseException as e:
            errors.append((f"busy client {k}", e))

    threads = [threading.Thread(target=busy, args=(k,), daemon=True) for k in range(CLIENTS // 2)]
    for k in range(CLIENTS // 2):
        pids[f"busy{k}"] = set()
    for t in threads:
        t.start()
    return threads


def with_busy_clients(body):
    stop = threading.Event()
    pids = {}
    errors = []
    threads = busy_clients(stop, pids, errors)
    try:
        body(pids)
    finally:
        stop.set()
        for t in threads:
            t.join()
    if errors:
        raise errors[0][1]
    return pids


def prepared_round(conn, k, i, what):
    """A few prepared queries, some already prepared by this connection, one new each time."""
    check_eq(one(conn, "SELECT %s::int + %s", (i, k)), i + k, f"{what} sum")
    check_eq(one(conn, "SELECT %s::text || %s::text", ("d", str(i))), f"d{i}", f"{what} concat")
    check_eq(one(conn, f"SELECT %s::int * {i + 1}", (k,)), k * (i + 1), f"{what} new statement")
    return one(conn, "SELECT pg_backend_pid() + %s", (0,))


def reset_all(conn, form):
    """A client's DISCARD ALL or DEALLOCATE ALL, in one of three forms."""
    if form == 0:
        # psycopg prepares this one too (prepare_threshold=0), then sees the command tag,
        # forgets its statements and sends DEALLOCATE ALL as a simple query.
        conn.execute("DISCARD ALL")
    elif form == 1:
        conn.execute("DISCARD ALL", prepare=False)  # a simple query
    else:
        conn.execute("DEALLOCATE ALL", prepare=False)  # a simple query, answered by pgward
    check_eq(len(conn._prepared._names), 0, f"psycopg forgot its statements (form {form})")


def discard():
    conns = [connect() for _ in range(CLIENTS // 2)]

    def body(pids):
        def worker(k):
            pids[k] = set()
            conn = conns[k]
            for i in range(max(6, ROUNDS // 3)):
                pids[k].add(prepared_round(conn, k, i, f"t{k} r{i} before"))
                reset_all(conn, i % 3)
                pids[k].add(prepared_round(conn, k, i, f"t{k} r{i} after"))

        run_threads(worker, len(conns))

    pids = with_busy_clients(body)
    report_backends(pids, "psycopg discard")

    def each(k, conn):
        prepared_round(conn, k, 1000, f"t{k} before")
        reset_all(conn, k % 3)
        return prepared_round(conn, k, 1000, f"t{k} after")

    on_each_server(conns, each, "psycopg discard")
    for conn in conns:
        conn.close()


def deallocate():
    def body(pids):
        def worker(k):
            pids[k] = set()
            with connect() as conn:
                for i in range(6):
                    pids[k].add(prepared_round(conn, k, i, f"t{k} r{i} before"))
                    # Prepared (Parse/Bind/Execute) like every query with prepare_threshold=0.
                    conn.execute("DEALLOCATE ALL")
                    check_eq(len(conn._prepared._names), 0, f"t{k} r{i} psycopg forgot")
                    pids[k].add(prepared_round(conn, k, i, f"t{k} r{i} after"))

        run_threads(worker, CLIENTS // 2)

    pids = with_busy_clients(body)
    report_backends(pids, "psycopg deallocate")


def deallocate_one_server():
    """Deterministic form of `deallocate`, for a pool of one server connection: client A's
    statement is prepared on the server; client B's DEALLOCATE ALL through the extended
    protocol runs on that server; A's statement must still work (PostgreSQL would keep it: it
    is A's), and so must B's own statements prepared again after it."""
    with connect() as a, connect() as b:
        check_eq(one(a, "SELECT %s::int + 1", (1,)), 2, "A before")
        check_eq(one(b, "SELECT %s::int + 1", (2,)), 3, "B before")
        b.execute("DEALLOCATE ALL")  # Parse/Bind/Execute of `DEALLOCATE ALL` (prepare_threshold=0)
        check_eq(one(b, "SELECT %s::int + 1", (3,)), 4, "B after its DEALLOCATE ALL")
        check_eq(one(a, "SELECT %s::int + 1", (4,)), 5, "A after B's DEALLOCATE ALL")


def deallocate_other_client():
    """Client B must not be able to drop client A's statements: B finds the server-side
    name in pg_prepared_statements and deallocates it through the extended protocol (the
    simple-query DEALLOCATE is answered by pgward from B's own statements)."""
    with connect() as a, connect() as b:
        check_eq(one(a, "SELECT %s::int + 10", (1,)), 11, "A before")
        rows = b.execute(
            "SELECT name FROM pg_prepared_statements WHERE statement = %s",
            ("SELECT $1::int + 10",),
        ).fetchall()
        print(f"server-side names of A's statement visible to B: {rows}")
        for (name,) in rows:
            try:
                b.execute(f'DEALLOCATE "{name}"', prepare=True)
                print(f"B deallocated {name} through the extended protocol")
            except psycopg.Error as e:
                print(f"B's DEALLOCATE {name} refused: {e}")
        check_eq(one(a, "SELECT %s::int + 10", (2,)), 12, "A after B's DEALLOCATE")


if __name__ == "__main__":
    main(
        {
            "threads": threads,
            "eviction": eviction,
            "discard": discard,
            "deallocate": deallocate,
            "deallocate_one_server": deallocate_one_server,
            "deallocate_other_client": deallocate_other_client,
        }
    )
