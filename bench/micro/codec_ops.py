"""Micro-benchmarks of the JT/T 808 codec's hot operations, over the ``telacd bench codec`` mix.

Run: ``.venv/bin/python -m bench.micro.codec_ops [--json] [--repeat 15]``

Each figure is the best (minimum) ns per frame over ``--repeat`` passes, for
the compiled and the reference implementation:

* ``split``: the Splitter alone (frames as bytes, no decode);
* ``decode_<id>``: FrameDecoder.feed on a stream of one message id;
* ``ack``: encode_ack of a decoded 0x0200 (the gateway's per-frame 0x8001);
* ``ingest_bare`` vs ``ingest_connection``: the gateway's common path at codec
  level, without sockets. *bare* is the floor a server needs to answer every
  frame: split, read msg id and serial straight from the escaped bytes, one
  0x8001 per frame. *connection* is what the gateway does: a platform
  ``Connection`` (online) turns the bytes into LocationReported events and
  ``conn.ack(event)`` builds each 0x8001. ``ingest_ratio`` = bare / connection
  time (the gateway target is >= 0.5 with the socket I/O on top, which both
  pay alike).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from bench.codec import build_mix
from protocols.jt808 import codec as reference
from protocols.jt808 import impl
from protocols.jt808.connection import Connection, Role


def best_ns(fn: Callable[[], int], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return round(best * 1e9, 1)


def _reads(data: bytes, size: int = 65536) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def suite(codec: ModuleType, stream: bytes, repeat: int) -> dict[str, Any]:
    frames = reference.Splitter(1 << 22).feed(stream)
    by_id: dict[int, list[bytes]] = {}
    for f in frames:
        by_id.setdefault(reference.decode_frame(f).msg_id, []).append(f)
    reads = _reads(stream)
    out: dict[str, Any] = {}

    def split() -> int:
        sp = codec.Splitter()
        return sum(len(sp.feed(r)) for r in reads)

    out["split"] = best_ns(split, repeat)
    for msg_id in (0x0200, 0x0002, 0x0704):
        rs = _reads(b"".join(by_id[msg_id]))

        def decode(rs: list[bytes] = rs) -> int:
            dec = codec.FrameDecoder()
            return sum(len(dec.feed(r)) for r in rs)

        out[f"decode_0x{msg_id:04x}"] = best_ns(decode, repeat)
    locs = codec.FrameDecoder().feed(b"".join(by_id[0x0200]))
    encode_ack = codec.encode_ack

    def ack() -> int:
        for k, msg in enumerate(locs):
            encode_ack(msg, k & 0xFFFF)
        return len(locs)

    out["ack"] = best_ns(ack, repeat)
    loc_reads = _reads(b"".join(by_id[0x0200]), 16384)
    encode_gr = codec.encode_general_response

    def ingest_bare() -> int:
        sp = codec.Splitter()
        n = 0
        sink = []
        for r in loc_reads:
            for f in sp.feed(r):
                # msg id and serial from the escaped bytes: no unescape, no checksum, no decode
                sink.append(
                    encode_gr("013800000000", 2013, 0, n & 0xFFFF, f[11] << 8 | f[12], f[1] << 8 | f[2], 0)
                )
                n += 1
        return n

    def ingest_connection() -> int:
        conn = Connection(Role.PLATFORM, codec=codec)
        conn.authorize()
        n = 0
        sink = []
        for r in loc_reads:
            for event in conn.receive_data(r, 0.0):
                sink.append(conn.ack(event))
                n += 1
        return n

    out["ingest_bare"] = best_ns(ingest_bare, repeat)
    out["ingest_connection"] = best_ns(ingest_connection, repeat)
    out["ingest_ratio"] = round(out["ingest_bare"] / out["ingest_connection"], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.micro.codec_ops", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--frames", type=int, default=20000)
    args = parser.parse_args(argv)
    stream, _ = build_mix(args.frames)
    result = {
        name: suite(mod, stream, args.repeat if name == "compiled" else max(3, args.repeat // 5))
        for name, mod in impl.implementations().items()
    }
    if args.json:
        print(json.dumps(result))
    else:
        for name, figures in result.items():
            print(name)
            for key, value in figures.items():
                print(f"  {key:>18}: {value}{'' if key.endswith('ratio') else ' ns/frame'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
