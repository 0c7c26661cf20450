"""``telacd bench store``: location writes through the PostgreSQL store vs a bare COPY loop.

One run measures, on the same rows and the same server:

* ``bare_copy_rows_per_s``: one connection calling ``copy_records_to_table``
  in a loop, ``--batch`` rows at a time, into a scratch table with the same
  columns (``LIKE locations``: no partitions, no index). It is the ceiling: binary
  COPY and nothing else. Its connection runs with ``synchronous_commit = off``,
  as the store's location COPYs do (``SET LOCAL`` in their transaction since
  commit 1d4c1ae; ``LOCATION_SYNCHRONOUS_COMMIT``), so neither path waits for a
  WAL flush per batch and the ratio compares like with like (the JSON says
  ``"synchronous_commit": "off"``).
* ``store_rows_per_s``: the real path. ``PostgresStore.add_locations`` is
  called ``--chunk`` rows at a time (1 = one call per decoded 0x0200 frame, as
  the gateway does), yielding to the event loop every batch so the store's
  writers run alongside, until ``flush_locations`` returns. The rows go into
  the store's own table: daily partitions, a (phone, t) index on each.
* ``bare_copy_same_layout_rows_per_s``: the bare loop again (the same
  connection and setting), but into a table laid out like the store's. It
  splits the gap into what the layout costs (the index) and what the store's
  machinery costs.

Each round uses fresh tables; rounds alternate which path goes first. The
rates are medians over rounds, and ``ratio`` = store / bare of those medians
(target ≥ 0.5); ``ratios_per_round`` shows the pairs measured side by side.

On a shared machine the wall-clock ratio moves with how many cores other
work leaves idle: the store overlaps two COPYs and needs a spare core to
gain from it. So when the server runs on this host and its processes are
readable, ``cpu_us_per_row`` also gives the CPU time each path spends per row
(this process, and the server backends that did the work, read from
/proc/PID/stat). That figure does not move with the neighbours' load.

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
    parser.add_argument("--rows", type=int, default=100_000, help="rows per path per round (default 100000)")
    parser.add_argument("--dsn", default=DEFAULT_DSN, help=f"PostgreSQL to write to (default {DEFAULT_DSN})")
    parser.add_argument("--batch", type=int, default=2000, help="rows per COPY (the store's location_batch)")
    parser.add_argument("--chunk", type=int, default=1, help="rows per add_locations call (default 1)")
    parser.add_argument("--vehicles", type=int, default=10_000, help="distinct phones in the rows")
    parser.add_argument("--rounds", type=int, default=5, help="rounds in this run; medians are reported")
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


# -- CPU accounting -----------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process on this host, or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class _CpuMeter:
    """CPU time of this process and of some server backends between start() and stop().

    Backends are found by application name at both ends, so connections the
    pool opens during the run are counted (from zero).
    """

    def __init__(self, monitor, application_name: str) -> None:
        self.monitor, self.app = monitor, application_name

    async def _backends(self) -> list[int]:
        sql = "SELECT pid FROM pg_stat_activity WHERE application_name = $1"
        return [r[0] for r in await self.monitor.fetch(sql, self.app)]

    async def start(self) -> None:
        self.before = {pid: _cpu_seconds(pid) for pid in await self._backends()}
        self.client0 = time.process_time()

    async def stop(self, rows: int) -> dict | None:
        client = time.process_time() - self.client0
        server = 0.0
        for pid in await self._backends():
            now, then = _cpu_seconds(pid), self.before.get(pid, 0.0)
            if now is None or then is None:
                return None  # the server is elsewhere, or its processes are not ours to read
            server += now - then
        return {"client": round(client / rows * 1e6, 2), "server": round(server / rows * 1e6, 2)}


def _with_app(url: str, app: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}application_name={app}"


# -- the three paths ------------------------------------------------------------------------


async def _bare_loop(conn, table: str, rows: list[tuple], batch: int, meter: _CpuMeter) -> tuple[float, dict]:
    from gateway.store.base import LOCATION_COLUMNS

    await meter.start()
    t0 = time.perf_counter()
    for i in range(0, len(rows), batch):
        await conn.copy_records_to_table(table, records=rows[i : i + batch], columns=LOCATION_COLUMNS)
    rate = len(rows) / (time.perf_counter() - t0)
    return rate, await meter.stop(len(rows))


async def _store_path(url: str, rows: list[tuple], args: argparse.Namespace, meter: _CpuMeter):
    from gateway.store.postgres import PostgresStore

    store = PostgresStore(_with_app(url, meter.app), location_batch=args.batch, pool_size=args.pool_size)
    await store.open()
    try:
        limit = 200_000 - args.chunk  # the default location_queue_max, less one call
        chunk, yield_every = args.chunk, max(1, args.batch // args.chunk)
        await meter.start()
        t0 = time.perf_counter()
        for k, i in enumerate(range(0, len(rows), chunk)):
            store.add_locations(rows[i : i + chunk])
            if k % yield_every == 0:
                await asyncio.sleep(0)
                while store.stats.pending > limit:  # the bench waits; the gateway would shed
                    await asyncio.sleep(0.001)
        await store.flush_locations()
        rate = len(rows) / (time.perf_counter() - t0)
        cpu = await meter.stop(len(rows))
        s = store.stats
        clean = s.location_rows == len(rows) and not s.shed and not s.errors
        writers = store._n_loc_writers
        detail = f"written {s.location_rows}, shed {s.shed}, errors {s.errors} ({s.last_error})"
    finally:
        await store.close()
    if not clean:
        raise RuntimeError(f"the store did not write every row cleanly: {detail}")
    return rate, cpu, writers


async def _prepare_scratch(conn, rows: list[tuple]) -> None:
    from gateway.store.migrations import POSTGRES_MIGRATIONS, apply_postgres

    await apply_postgres(conn, POSTGRES_MIGRATIONS)  # gives the scratch tables the store's columns
    await conn.execute("CREATE TABLE bare_locations (LIKE locations)")
    # what the store writes through, minus the store: same layout, bare loop
    await conn.execute(
        "CREATE TABLE layout_locations (LIKE locations) PARTITION BY RANGE (t);"
        "CREATE INDEX ON layout_locations (phone, t);"
        "CREATE TABLE layout_other PARTITION OF layout_locations DEFAULT"
    )
    for d in range(int(rows[0][1] // 86400), int(rows[-1][1] // 86400) + 2):
        await conn.execute(
            f"CREATE TABLE layout_{d} PARTITION OF layout_locations "
            f"FOR VALUES FROM ({d * 86400.0}) TO ({(d + 1) * 86400.0})"
        )


def _median_cpu(samples: list[dict | None]) -> dict | None:
    if not samples or any(s is None for s in samples):
        return None
    client = statistics.median(s["client"] for s in samples)
    server = statistics.median(s["server"] for s in samples)
    return {"client": client, "server": server, "total": round(client + server, 2)}


async def run(args: argparse.Namespace) -> dict:
    import asyncpg

    from gateway.store.postgres import (
        LOCATION_SYNCHRONOUS_COMMIT,
        drop_schema_url,
        fresh_schema_url,
        parse_postgres_url,
    )

    _progress(f"generating {args.rows} rows for {args.vehicles} vehicles")
    rows = make_rows(args.rows, args.vehicles)
    dsn = parse_postgres_url(args.dsn)[0]
    rate: dict[str, list[float]] = {"bare": [], "store": [], "layout": []}
    cpu: dict[str, list] = {"bare": [], "store": [], "layout": []}
    writers = None
    app = f"telacd-bench-{os.getpid()}"
    monitor = await asyncpg.connect(dsn)
    try:
        for r in range(args.rounds):
            scratch_url = await fresh_schema_url(args.dsn, prefix="telacd_bench")
            store_url = await fresh_schema_url(args.dsn, prefix="telacd_bench")
            try:
                schema = parse_postgres_url(scratch_url)[1]
                # the store's setting for its location COPYs (off: locations are acknowledged before they
                # are stored, their commit need not wait for the disk), here for the whole session
                settings = {"search_path": f'"{schema}"', "application_name": f"{app}-bare",
                            "synchronous_commit": LOCATION_SYNCHRONOUS_COMMIT}  # fmt: skip
                conn = await asyncpg.connect(dsn, server_settings=settings)
                try:
                    in_effect = await conn.fetchval("SHOW synchronous_commit")
                    if in_effect != LOCATION_SYNCHRONOUS_COMMIT:
                        raise RuntimeError(
                            f"the bare loop runs with synchronous_commit {in_effect!r}, the store's COPYs "
                            f"with {LOCATION_SYNCHRONOUS_COMMIT!r}: not like for like"
                        )
                    await _prepare_scratch(conn, rows)
                    bare_meter = _CpuMeter(monitor, f"{app}-bare")
                    order = ("bare", "store", "layout") if r % 2 == 0 else ("store", "bare", "layout")
                    for path in order:
                        if path == "store":
                            x, c, writers = await _store_path(store_url, rows, args, _CpuMeter(monitor, app))
                        else:
                            table = "bare_locations" if path == "bare" else "layout_locations"
                            x, c = await _bare_loop(conn, table, rows, args.batch, bare_meter)
                        rate[path].append(x)
                        cpu[path].append(c)
                finally:
                    await conn.close()
            finally:
                await drop_schema_url(store_url)
                await drop_schema_url(scratch_url)
            _progress(
                f"round {r + 1}/{args.rounds}: bare {rate['bare'][-1]:,.0f} rows/s, "
                f"store {rate['store'][-1]:,.0f} rows/s (ratio {rate['store'][-1] / rate['bare'][-1]:.2f}), "
                f"bare into the store's layout {rate['layout'][-1]:,.0f} rows/s"
            )
    finally:
        await monitor.close()
    b, s, lay = (statistics.median(rate[k]) for k in ("bare", "store", "layout"))
    cpu_rows = {k: _median_cpu(v) for k, v in cpu.items()}
    result = {
        "bare_copy_rows_per_s": round(b),
        "store_rows_per_s": round(s),
        "ratio": round(s / b, 3),
        "batch": args.batch,
        "synchronous_commit": LOCATION_SYNCHRONOUS_COMMIT,  # of the location COPYs, on every path
        "bare_copy_same_layout_rows_per_s": round(lay),
        "store_vs_same_layout": round(s / lay, 3),
        "ratios_per_round": [round(x / y, 3) for x, y in zip(rate["store"], rate["bare"])],
        "cpu_us_per_row": cpu_rows if all(cpu_rows.values()) else None,
        "rows": args.rows,
        "rounds": args.rounds,
        "chunk": args.chunk,
        "vehicles": args.vehicles,
        "store_writers": writers,
        "pool_size": args.pool_size,
        "loop": args.loop,
    }
    if result["cpu_us_per_row"]:
        # CPU spent per row on the bare loop / on the store path: the ratio with no idle core to use
        result["cpu_ratio"] = round(cpu_rows["bare"]["total"] / cpu_rows["store"]["total"], 3)
    return result


def main(args: argparse.Namespace) -> int:
    if args.loop == "uvloop":
        import uvloop

        runner = uvloop.run
    else:
        runner = asyncio.run
    from gateway.store import StoreError

    try:
        result = runner(run(args))
    except (OSError, RuntimeError, StoreError) as e:
        print(f"telacd bench store: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        print(
            f"bare COPY loop          {result['bare_copy_rows_per_s']:>10,} rows/s\n"
            f"store (add_locations)   {result['store_rows_per_s']:>10,} rows/s   ratio {result['ratio']:.2f}\n"
            f"bare COPY, same layout  {result['bare_copy_same_layout_rows_per_s']:>10,} rows/s\n"
            f"(batch {result['batch']}, {result['rows']} rows x {result['rounds']} rounds, medians;"
            f" synchronous_commit {result['synchronous_commit']} on every path)"
        )
        if result["cpu_us_per_row"]:
            for k, v in result["cpu_us_per_row"].items():
                print(f"cpu per row, {k:<7} client {v['client']:.2f} us + server {v['server']:.2f} us")
    return 0
