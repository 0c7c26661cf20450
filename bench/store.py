"""``telacd bench store``: location writes through the PostgreSQL store vs a bare COPY loop.

One run measures, on the same rows and the same server:

* ``bare_copy_rows_per_s``: one connection calling ``copy_records_to_table``
  in a loop, ``--batch`` rows at a time, into a scratch table with the same
  columns (``LIKE locations``: no partitions, no index). It is the ceiling: binary
  COPY and nothing else.
* ``store_rows_per_s``: the real path. ``PostgresStore.add_locations`` is
  called ``--chunk`` rows at a time (1 = one call per decoded 0x0200 frame, as
  the gateway does), yielding to the event loop every batch so the store's
  writers run alongside, until ``flush_locations`` returns. The rows go into
  the store's own table: daily partitions, a (phone, t) index on each.
* ``bare_copy_same_layout_rows_per_s``: the bare loop again, but into a table
  laid out like the store's. It splits the gap into what the layout costs
  (the index) and what the store's machinery costs.

Each round uses fresh tables; rounds alternate which path goes first, and the
figures are the medians over rounds. ``ratio`` = store / bare (target ≥ 0.5).
Progress goes to stderr; ``--json`` prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time

import orjson

DEFAULT_DSN = os.environ.get("TELACD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--rows", type=int, default=200_000, help="rows per path per round (default 200000)")
    parser.add_argument("--dsn", default=DEFAULT_DSN, help=f"PostgreSQL to write to (default {DEFAULT_DSN})")
    parser.add_argument("--batch", type=int, default=2000, help="rows per COPY (the store's location_batch)")
    parser.add_argument("--chunk", type=int, default=1, help="rows per add_locations call (default 1)")
    parser.add_argument("--vehicles", type=int, default=10_000, help="distinct phones in the rows")
    parser.add_argument("--rounds", type=int, default=3, help="rounds in this run; medians are reported")
    parser.add_argument("--pool-size", type=int, default=4, help="the store's pool_size")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="event loop")


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_rows(n: int, vehicles: int, seed: int = 808) -> list[tuple]:
    """GPS rows as the gateway queues them: a fleet reporting around now, in arrival order."""
    rnd = random.Random(seed)
    phones = [f"0138{i:08d}" for i in range(vehicles)]
    start = time.time() - n / 1000.0  # the fleet reports ~1000 rows/s: n rows end about now
    rows = []
    for i in range(n):
        t = round(start + i / 1000.0, 3)
        rows.append(
            (
                phones[rnd.randrange(vehicles)],
                t,
                t + 0.4,
                22.5 + rnd.random() * 0.5,
                113.8 + rnd.random() * 0.5,
                rnd.randrange(0, 120),
                round(rnd.random() * 90, 1),
                rnd.randrange(0, 360),
                0,
                3,
                '{"mileage_km": 1234.5}' if i % 10 == 0 else None,
            )
        )
    return rows


async def _bare_loop(conn, table: str, rows: list[tuple], batch: int) -> float:
    from gateway.store.base import LOCATION_COLUMNS

    t0 = time.perf_counter()
    for i in range(0, len(rows), batch):
        await conn.copy_records_to_table(table, records=rows[i : i + batch], columns=LOCATION_COLUMNS)
    return len(rows) / (time.perf_counter() - t0)


async def _store_path(url: str, rows: list[tuple], args: argparse.Namespace) -> tuple[float, dict]:
    from gateway.store.postgres import PostgresStore

    store = PostgresStore(url, location_batch=args.batch, pool_size=args.pool_size)
    await store.open()
    try:
        limit = 200_000 - args.chunk  # the default location_queue_max, less one call
        chunk, yield_every = args.chunk, max(1, args.batch // args.chunk)
        t0 = time.perf_counter()
        for k, i in enumerate(range(0, len(rows), chunk)):
            store.add_locations(rows[i : i + chunk])
            if k % yield_every == 0:
                await asyncio.sleep(0)
                while store.stats.pending > limit:  # the bench waits; the gateway would shed
                    await asyncio.sleep(0.001)
        await store.flush_locations()
        rate = len(rows) / (time.perf_counter() - t0)
        s = store.stats
        info = {
            "writers": store._n_loc_writers,
            "shed": s.shed,
            "errors": s.errors,
            "written": s.location_rows,
        }
    finally:
        await store.close()
    if info["written"] != len(rows) or info["shed"] or info["errors"]:
        raise RuntimeError(f"the store did not write every row cleanly: {info}")
    return rate, info


async def run(args: argparse.Namespace) -> dict:
    import asyncpg

    from gateway.store.postgres import drop_schema_url, fresh_schema_url, parse_postgres_url

    _progress(f"generating {args.rows} rows for {args.vehicles} vehicles")
    rows = make_rows(args.rows, args.vehicles)
    bare, store, layout, info = [], [], [], {}
    for r in range(args.rounds):
        url = await fresh_schema_url(args.dsn, prefix="telacd_bench")
        try:
            # the store's schema gives both scratch tables their columns (and one its layout)
            schema = parse_postgres_url(url)[1]
            store_url = await fresh_schema_url(args.dsn, prefix="telacd_bench")
            try:
                dsn = parse_postgres_url(args.dsn)[0]
                conn = await asyncpg.connect(dsn, server_settings={"search_path": f'"{schema}"'})
                try:
                    from gateway.store.migrations import POSTGRES_MIGRATIONS, apply_postgres

                    await apply_postgres(conn, POSTGRES_MIGRATIONS)
                    await conn.execute("CREATE TABLE bare_locations (LIKE locations)")
                    # what the store writes through, minus the store: same layout, bare loop
                    await conn.execute(
                        "CREATE TABLE layout_locations (LIKE locations) PARTITION BY RANGE (t);"
                        "CREATE INDEX ON layout_locations (phone, t);"
                        "CREATE TABLE layout_other PARTITION OF layout_locations DEFAULT"
                    )
                    day = int(rows[0][1] // 86400)
                    for d in range(day, int(rows[-1][1] // 86400) + 2):
                        await conn.execute(
                            f"CREATE TABLE layout_{d} PARTITION OF layout_locations "
                            f"FOR VALUES FROM ({d * 86400.0}) TO ({(d + 1) * 86400.0})"
                        )
                    order = ("bare", "store", "layout") if r % 2 == 0 else ("store", "bare", "layout")
                    for path in order:
                        if path == "bare":
                            bare.append(await _bare_loop(conn, "bare_locations", rows, args.batch))
                        elif path == "layout":
                            layout.append(await _bare_loop(conn, "layout_locations", rows, args.batch))
                        else:
                            rate, info = await _store_path(store_url, rows, args)
                            store.append(rate)
                finally:
                    await conn.close()
            finally:
                await drop_schema_url(store_url)
        finally:
            await drop_schema_url(url)
        _progress(
            f"round {r + 1}/{args.rounds}: bare {bare[-1]:,.0f} rows/s, store {store[-1]:,.0f} rows/s "
            f"(ratio {store[-1] / bare[-1]:.2f}), bare into the store's layout {layout[-1]:,.0f} rows/s"
        )
    b, s, lay = statistics.median(bare), statistics.median(store), statistics.median(layout)
    return {
        "bare_copy_rows_per_s": round(b),
        "store_rows_per_s": round(s),
        "ratio": round(s / b, 3),
        "batch": args.batch,
        "bare_copy_same_layout_rows_per_s": round(lay),
        "store_vs_same_layout": round(s / lay, 3),
        "rows": args.rows,
        "rounds": args.rounds,
        "chunk": args.chunk,
        "vehicles": args.vehicles,
        "store_writers": info.get("writers"),
        "pool_size": args.pool_size,
        "loop": args.loop,
        "ratios_per_round": [round(x / y, 3) for x, y in zip(store, bare)],
    }


def main(args: argparse.Namespace) -> int:
    if args.loop == "uvloop":
        import uvloop

        runner = uvloop.run
    else:
        runner = asyncio.run
    try:
        result = runner(run(args))
    except (OSError, RuntimeError) as e:
        print(f"telacd bench store: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        from gateway.store import StoreError

        if isinstance(e, StoreError):
            print(f"telacd bench store: {e}", file=sys.stderr)
            return 1
        raise
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        print(
            f"bare COPY loop        {result['bare_copy_rows_per_s']:>12,} rows/s\n"
            f"store (add_locations) {result['store_rows_per_s']:>12,} rows/s   ratio {result['ratio']:.2f}\n"
            f"bare COPY, same layout{result['bare_copy_same_layout_rows_per_s']:>12,} rows/s\n"
            f"(batch {result['batch']}, {result['rows']} rows x {result['rounds']} rounds, medians)"
        )
    return 0
