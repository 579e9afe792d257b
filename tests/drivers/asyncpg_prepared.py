"""asyncpg through pgward. asyncpg prepares every query with arguments as a named statement
(`__asyncpg_stmt_<n>__`, <n> from one counter per process) and caches it per connection, so in
transaction mode each connection's statements must follow it to whichever server it gets next.
It prepares with Parse/Describe/Flush (no Sync) and executes with Bind/Execute/Sync, so a
connection holds its server from a prepare to the next execution.

Every scenario checks every result; in transaction mode the ones with several connections end
with `on_each_server`, which runs each client's statements on every server connection in turn.

Scenarios (argv[1]):
  concurrent  CLIENTS connections at once, each running many fetchval/fetchrow queries,
              transactions (committed, rolled back, failed) and failing statements;
  statements  conn.prepare() statement objects reused in and out of transactions, cursors with
              prefetch and forward (named portals), executemany;
  collisions  run as several processes at once: every process's connections use the same
              statement names (`__asyncpg_stmt_1__`, ...; asyncpg's counter is reset for each
              connection) for SQL that differs per process and per connection, including
              different result types;
  eviction    statement_cache_size=3 with 8 distinct queries: asyncpg closes the statements it
              evicts and prepares them again under new names;
  pool        asyncpg.create_pool (fewer pool connections than tasks): release runs asyncpg's
              reset query between tasks.
"""

import asyncio

import asyncpg

from common import (
    CLIENTS,
    DATABASE,
    HOST,
    INDEX,
    PASSWORD,
    PORT,
    ROUNDS,
    USER,
    Failure,
    MODE,
    POOL_SIZE,
    report_backends,
    check_eq,
    main,
)


async def connect(**kw):
    return await asyncpg.connect(
        host=HOST,
        port=PORT,
        user=USER,
        password=PASSWORD,
        database=DATABASE,
        ssl=False,
        timeout=10,
        command_timeout=15,
        **kw,
    )


class Rollback(Exception):
    pass


async def on_each_server(conns, body, what):
    """Makes certain that every client runs its statements on every server connection, so on
    servers where it did not prepare them: extra connections hold all servers but one in open
    transactions, each client in turn runs `body(k, conn)` (which returns the backend pid it
    ran on) on the one left free, and so on for each server. Transaction mode only."""
    if MODE != "transaction":
        return
    holders = [await connect() for _ in range(POOL_SIZE)]
    txs, pins = [], []
    for h in holders:
        txs.append(h.transaction())
        await txs[-1].start()
        pins.append(await h.fetchval("SELECT pg_backend_pid()"))
    check_eq(len(set(pins)), POOL_SIZE, f"{what}: holders pin every server connection")
    for idx, h in enumerate(holders):
        await txs[idx].commit()
        for k, conn in enumerate(conns):
            pid = await body(k, conn)
            check_eq(pid, pins[idx], f"{what}: client {k} on the only free server")
        txs[idx] = h.transaction()
        await txs[idx].start()
        check_eq(await h.fetchval("SELECT pg_backend_pid()"), pins[idx], f"{what}: pin again")
    for tx in txs:
        await tx.commit()
    await asyncio.gather(*(h.close() for h in holders))
    print(f"{what}: every client ran on each of the {POOL_SIZE} server connections in turn")


async def concurrent():
    conns = await asyncio.gather(*(connect() for _ in range(CLIENTS)))
    pids = {k: set() for k in range(CLIENTS)}

    async def worker(k, conn):
        for i in range(ROUNDS):
            check_eq(await conn.fetchval("SELECT $1::int + $2", i, k), i + k, f"c{k} r{i} sum")
            row = await conn.fetchrow(
                "SELECT $1::text || $2::text AS s, pg_backend_pid() AS pid", f"c{k}", str(i)
            )
            check_eq(row["s"], f"c{k}{i}", f"c{k} r{i} concat")
            pids[k].add(row["pid"])
            if i % 3 == 0:
                async with conn.transaction():
                    a = await conn.fetchrow("SELECT $1::int * 2 AS v, pg_backend_pid() AS pid", i)
                    b = await conn.fetchrow(
                        "SELECT $1::int + $2 AS v, pg_backend_pid() AS pid", i, k
                    )
                    check_eq((a["v"], b["v"]), (i * 2, i + k), f"c{k} r{i} in transaction")
                    check_eq(b["pid"], a["pid"], f"c{k} r{i} one server for the transaction")
                    pids[k].add(a["pid"])
            if i % 5 == 1:
                try:
                    async with conn.transaction():
                        check_eq(
                            await conn.fetchval("SELECT $1::int + $2", i, 100), i + 100,
                            f"c{k} r{i} before rollback",
                        )
                        raise Rollback()
                except Rollback:
                    pass
            if i % 7 == 2:
                # A statement that fails at execution: the next ones must still work.
                try:
                    await conn.fetchval("SELECT 1 / $1::int", 0)
                    raise Failure(f"c{k} r{i}: division by zero succeeded")
                except asyncpg.DivisionByZeroError:
                    pass
                check_eq(await conn.fetchval("SELECT 1 / $1::int", 1), 1, f"c{k} r{i} after error")
            if i % 7 == 4:
                # The failure inside a transaction aborts it; the rollback must clear it.
                try:
                    async with conn.transaction():
                        await conn.fetchval("SELECT 1 / $1::int", 0)
                except asyncpg.DivisionByZeroError:
                    pass
                check_eq(
                    await conn.fetchval("SELECT $1::int + $2", i, k), i + k,
                    f"c{k} r{i} after failed transaction",
                )
            await asyncio.sleep(0)

    await asyncio.gather(*(worker(k, c) for k, c in enumerate(conns)))
    report_backends(pids, "asyncpg concurrent")

    async def each(k, conn):
        check_eq(await conn.fetchval("SELECT $1::int + $2", 5, k), 5 + k, f"c{k} sum")
        async with conn.transaction():
            check_eq(await conn.fetchval("SELECT $1::int * 2 AS v, pg_backend_pid() AS pid", k),
                     k * 2, f"c{k} in transaction")
        row = await conn.fetchrow(
            "SELECT $1::text || $2::text AS s, pg_backend_pid() AS pid", f"c{k}", "x"
        )
        check_eq(row["s"], f"c{k}x", f"c{k} concat")
        return row["pid"]

    await on_each_server(conns, each, "asyncpg concurrent")
    await asyncio.gather(*(c.close() for c in conns))


async def statements():
    setup = await connect()
    await setup.execute(
        "CREATE TABLE IF NOT EXISTS drivers_asyncpg (k int, i int, v text, PRIMARY KEY (k, i))"
    )
    await setup.execute("DELETE FROM drivers_asyncpg")
    await setup.close()

    conns = await asyncio.gather(*(connect() for _ in range(CLIENTS)))
    pids = {k: set() for k in range(CLIENTS)}
    prepared = {}

    async def worker(k, conn):
        mul = await conn.prepare("SELECT $1::int * $2::int AS product, pg_backend_pid() AS pid")
        series = await conn.prepare(
            "SELECT g, g * $1::int AS m FROM generate_series(1, $2::int) AS g ORDER BY g"
        )
        label = await conn.prepare("SELECT $1::text || '-' || $2::int")
        prepared[k] = (mul, series, label)
        check_eq(
            [t.name for t in mul.get_parameters()], ["int4", "int4"], f"c{k} mul parameters"
        )
        check_eq(
            [a.name for a in series.get_attributes()], ["g", "m"], f"c{k} series attributes"
        )
        for i in range(ROUNDS):
            row = await mul.fetchrow(i, k)
            check_eq(row["product"], i * k, f"c{k} r{i} product")
            pids[k].add(row["pid"])
            check_eq(await label.fetchval(f"c{k}", i), f"c{k}-{i}", f"c{k} r{i} label")
            async with conn.transaction():
                rows = await series.fetch(k + 1, 4)
                check_eq(
                    [tuple(r) for r in rows],
                    [(g, g * (k + 1)) for g in range(1, 5)],
                    f"c{k} r{i} series in transaction",
                )
                check_eq(await mul.fetchval(i, 3), i * 3, f"c{k} r{i} product in transaction")
            if i % 4 == 0:
                async with conn.transaction():
                    # A cursor is a named portal, fetched a few rows per Execute.
                    total = 0
                    async for r in series.cursor(k + 2, 40, prefetch=7):
                        total += r["m"]
                    check_eq(total, (k + 2) * 40 * 41 // 2, f"c{k} r{i} cursor sum")
                    cur = await series.cursor(1, 20)
                    check_eq([r["g"] for r in await cur.fetch(3)], [1, 2, 3], f"c{k} r{i} fetch")
                    await cur.forward(10)
                    check_eq((await cur.fetchrow())["g"], 14, f"c{k} r{i} after forward")
            if i % 10 == 5:
                await conn.executemany(
                    "INSERT INTO drivers_asyncpg (k, i, v) VALUES ($1, $2, $3)",
                    [(k, i * 100 + j, f"v{j}") for j in range(10)],
                )
                n, s = await conn.fetchrow(
                    "SELECT count(*), sum(i) FROM drivers_asyncpg WHERE k = $1 AND i / 100 = $2",
                    k, i,
                )
                check_eq((n, s), (10, sum(i * 100 + j for j in range(10))), f"c{k} r{i} rows")
            await asyncio.sleep(0)

    await asyncio.gather(*(worker(k, c) for k, c in enumerate(conns)))
    report_backends(pids, "asyncpg statements")

    async def each(k, conn):
        mul, series, label = prepared[k]
        row = await mul.fetchrow(7, k)
        check_eq(row["product"], 7 * k, f"c{k} product")
        check_eq(await label.fetchval(f"c{k}", 7), f"c{k}-7", f"c{k} label")
        async with conn.transaction():
            rows = await series.fetch(k, 3)
            check_eq([tuple(r) for r in rows], [(g, g * k) for g in (1, 2, 3)], f"c{k} series")
            check_eq(sum([r["m"] async for r in series.cursor(1, 10, prefetch=3)]), 55, "cursor")
        return row["pid"]

    await on_each_server(conns, each, "asyncpg statements")
    await asyncio.gather(*(c.close() for c in conns))


def statement_name(stmt):
    """asyncpg's name for a prepared statement (internal attribute; None if it moved)."""
    state = getattr(stmt, "_state", None)
    return getattr(state, "name", None)


async def collisions():
    # Every process starts asyncpg's name counter afresh, so the first statement of each
    # process's first connection is __asyncpg_stmt_1__, and so on: the same names, for SQL
    # that differs per process. Within the process the connections take turns preparing
    # their first statements so that each statement name also serves different SQL here.
    #
    # asyncpg prepares with Parse/Describe/Flush and no Sync, so a connection that has prepared
    # holds its server connection until its next Sync (pgward, like PostgreSQL, cannot hand a
    # server over in the middle of an extended-query sequence). Each statement is therefore
    # run once right away: preparing on every connection first would need a server each.
    conns = [await connect() for _ in range(CLIENTS)]
    tag = INDEX * 1000
    names = []
    first = []
    for k, conn in enumerate(conns):
        asyncpg.connection._uid = 0  # each connection names its statements from 1 again
        s = await conn.prepare(f"SELECT $1::int + {tag + k}")
        check_eq(await s.fetchval(1), 1 + tag + k, f"c{k} first statement, first run")
        names.append(statement_name(s))
        first.append(s)
        # A second name shared across connections, with a result type that differs too.
        if (INDEX + k) % 2:
            second = await conn.prepare(f"SELECT $1::int * {tag + k + 1}")
            check_eq(await second.fetchval(2), 2 * (tag + k + 1), f"c{k} second, first run")
        else:
            second = await conn.prepare(f"SELECT $1::text || '-{tag + k}'")
            check_eq(await second.fetchval("a"), f"a-{tag + k}", f"c{k} second, first run")
    print(f"asyncpg collisions: process {INDEX}: first statement names {names}")
    if all(n is not None for n in names):
        check_eq(set(names), {"__asyncpg_stmt_1__"}, "asyncpg statement names (setup)")
    pids = {k: set() for k in range(CLIENTS)}

    async def worker(k, conn):
        for i in range(ROUNDS):
            check_eq(
                await first[k].fetchval(i), i + tag + k, f"process {INDEX} c{k} r{i} first"
            )
            if (INDEX + k) % 2:
                got = await conn.fetchval(f"SELECT $1::int * {tag + k + 1}", i)
                check_eq(got, i * (tag + k + 1), f"process {INDEX} c{k} r{i} second")
            else:
                got = await conn.fetchval(f"SELECT $1::text || '-{tag + k}'", str(i))
                check_eq(got, f"{i}-{tag + k}", f"process {INDEX} c{k} r{i} second")
            pids[k].add(await conn.fetchval("SELECT pg_backend_pid() + $1::int", 0))
            if i % 4 == 0:
                async with conn.transaction():
                    check_eq(await first[k].fetchval(-i), tag + k - i, f"c{k} r{i} in tx")
            await asyncio.sleep(0)

    await asyncio.gather(*(worker(k, c) for k, c in enumerate(conns)))
    report_backends(pids, f"asyncpg collisions (process {INDEX})")

    async def each(k, conn):
        check_eq(await first[k].fetchval(3), 3 + tag + k, f"process {INDEX} c{k} first")
        if (INDEX + k) % 2:
            got = await conn.fetchval(f"SELECT $1::int * {tag + k + 1}", 3)
            check_eq(got, 3 * (tag + k + 1), f"process {INDEX} c{k} second")
        else:
            got = await conn.fetchval(f"SELECT $1::text || '-{tag + k}'", "3")
            check_eq(got, f"3-{tag + k}", f"process {INDEX} c{k} second")
        return await conn.fetchval("SELECT pg_backend_pid() + $1::int", 0)

    if INDEX == 0:
        # One process rotates (holders from several processes would wait for each other).
        await on_each_server(conns, each, "asyncpg collisions")
    await asyncio.gather(*(c.close() for c in conns))


async def eviction():
    conns = await asyncio.gather(*(connect(statement_cache_size=3) for _ in range(CLIENTS)))
    queries = [f"SELECT $1::int + {q} AS v, pg_backend_pid() AS pid" for q in range(8)]
    pids = {k: set() for k in range(CLIENTS)}

    async def worker(k, conn):
        for i in range(ROUNDS):
            for q, sql in enumerate(queries):
                row = await conn.fetchrow(sql, i * k)
                check_eq(row["v"], i * k + q, f"c{k} r{i} q{q}")
                pids[k].add(row["pid"])
            if i % 5 == 0:
                async with conn.transaction():
                    for q in (7, 0, 3):
                        check_eq(
                            await conn.fetchval(queries[q], k), k + q, f"c{k} r{i} q{q} in tx"
                        )
            await asyncio.sleep(0)

    await asyncio.gather(*(worker(k, c) for k, c in enumerate(conns)))
    report_backends(pids, "asyncpg eviction")

    async def each(k, conn):
        pid = None
        for q, sql in enumerate(queries):
            row = await conn.fetchrow(sql, k)
            check_eq(row["v"], k + q, f"c{k} q{q}")
            pid = row["pid"]
        return pid

    await on_each_server(conns, each, "asyncpg eviction")
    await asyncio.gather(*(c.close() for c in conns))


async def pool():
    p = await asyncpg.create_pool(
        host=HOST,
        port=PORT,
        user=USER,
        password=PASSWORD,
        database=DATABASE,
        ssl=False,
        min_size=1,
        max_size=max(2, CLIENTS // 2),
        command_timeout=15,
    )

    async def task(k):
        for i in range(ROUNDS // 3 + 1):
            async with p.acquire() as conn:
                check_eq(await conn.fetchval("SELECT $1::int + $2", i, k), i + k, f"t{k} r{i}")
                async with conn.transaction():
                    check_eq(
                        await conn.fetchval("SELECT $1::text || $2::text", "t", str(k)),
                        f"t{k}",
                        f"t{k} r{i} in transaction",
                    )

    await asyncio.gather(*(task(k) for k in range(CLIENTS * 2)))
    await p.close()


if __name__ == "__main__":
    main(
        {
            "concurrent": concurrent,
            "statements": statements,
            "collisions": collisions,
            "eviction": eviction,
            "pool": pool,
        }
    )
