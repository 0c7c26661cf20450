"""``telacd bench codec``: JT/T 808 split + unescape + checksum + full decode, compiled vs reference.

The input is a realistic mix of terminal frames (``build_mix``): 80% 0x0200
location reports with 4-8 additional items, 10% 0x0002 heartbeats, 5% 0x0704
batches of 5 positions, 5% other (0x0001 answers, 0x0201, 0x0900 service calls,
0x0102 authentications). Coordinates, speeds and item values are random, so
about a third of the frames contain a byte that must be escaped, as on a real
link. Frames are concatenated into one stream and fed to a ``FrameDecoder`` in
reads of ``--read-size`` bytes, as a connection with a busy terminal would see
them; every frame is fully decoded into records (nothing is deferred).

Both implementations run in the same process, one after the other, on the
same bytes; ``ratio`` is compiled/reference from this run. The figures are
single-core: the process is single-threaded.

    telacd bench codec --json
    telacd bench codec --seconds 5 --frames 50000 --read-size 65536
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import sys
import time
from typing import Any

from protocols.jt808 import codec as reference
from protocols.jt808 import impl
from protocols.jt808 import messages as m

MIX = {"0x0200": 0.80, "0x0002": 0.10, "0x0704": 0.05, "other": 0.05}


def _location(rnd: random.Random, t: int, n_items: int) -> m.Location:
    items: list[tuple[int, Any]] = [
        (0x01, rnd.randrange(1, 10_000_000)),  # mileage
        (0x30, rnd.randrange(0, 32)),  # RSSI
        (0x31, rnd.randrange(4, 24)),  # satellites
        (0x25, rnd.choice((0, 1, 3))),  # extended signals
        (0x02, rnd.randrange(0, 8000)),  # fuel
        (0x2A, rnd.randrange(0, 16)),  # IO status
        (0x03, rnd.randrange(0, 1200)),  # tachograph speed
        (0xE1, rnd.randbytes(4)),  # a vendor item
    ][:n_items]
    alarm = 1 if rnd.random() < 0.002 else 0
    return m.make_location(
        round(rnd.uniform(18.0, 45.0), 6),
        round(rnd.uniform(75.0, 130.0), 6),
        device_time=t,
        alarm=alarm,
        status=0x000C0003,  # ACC on, positioned, GPS + BeiDou
        altitude=rnd.randrange(0, 1500),
        speed_kmh=round(rnd.uniform(0, 120), 1),
        direction=rnd.randrange(0, 360),
        items=tuple(items),
    )


def build_mix(
    frames: int, seed: int = 808, phones: int = 1, version: int = 2013
) -> tuple[bytes, dict[str, int]]:
    """``frames`` encoded terminal frames in the MIX proportions; returns (stream, counts by kind)."""
    rnd = random.Random(seed)
    width = 20 if version == 2019 else 12
    phone_list = [str(13800000000 + 7919 * i).rjust(width, "0") for i in range(phones)]
    t = m.bcd_time(bytes.fromhex("240601080000")) or 0
    counts = dict.fromkeys(MIX, 0)
    out = []
    for k in range(frames):
        phone = phone_list[k % phones]
        serial = k & 0xFFFF
        r = rnd.random()
        t += 1
        if r < 0.80:
            kind, msg_id = "0x0200", 0x0200
            body = m.push_location(_location(rnd, t, rnd.randint(4, 8)))
        elif r < 0.90:
            kind, msg_id, body = "0x0002", 0x0002, b""
        elif r < 0.95:
            kind, msg_id = "0x0704", 0x0704
            pos = tuple(_location(rnd, t - 50 + i, rnd.randint(2, 5)) for i in range(5))
            body = m.encode_body(m.LocationBatch(rnd.choice((0, 1)), 5, pos, False), version)
        else:
            kind = "other"
            which = rnd.random()
            if which < 0.4:
                msg_id, body = (
                    0x0001,
                    m.encode_body(m.GeneralResponse(rnd.randrange(65536), 0x8300, 0), version),
                )
            elif which < 0.6:
                loc = _location(rnd, t, 4)
                msg_id, body = (
                    0x0201,
                    m.encode_body(m.LocationQueryResponse(rnd.randrange(65536), loc), version),
                )
            elif which < 0.8:
                msg_id, body = (
                    0x0900,
                    m.encode_body(m.Passthrough(0xF0, "道路救援 roadside".encode()), version),
                )
            else:
                msg_id, body = (
                    0x0102,
                    m.encode_body(m.Authenticate("A" * 12, "8612345678901234"[:15], "1.0"), version),
                )
        counts[kind] += 1
        out.append(reference.encode_frame(msg_id, body, phone, serial, version))
    return b"".join(out), counts


def _reads(stream: bytes, size: int) -> list[bytes]:
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def measure(codec: Any, reads: list[bytes], expected: int, seconds: float, label: str) -> dict[str, Any]:
    """Decode the stream repeatedly for about ``seconds``; frames/s over whole passes."""
    # one untimed pass: checks the result and warms caches
    dec = codec.FrameDecoder()
    got = 0
    for r in reads:
        out = dec.feed(r)
        got += len(out)
        for x in out:
            if not isinstance(x, m.Message):
                raise RuntimeError(f"{label}: decode error in the bench mix: {x!r}")
    if got != expected:
        raise RuntimeError(f"{label}: {got} frames decoded, {expected} expected")
    passes = 0
    frames = 0
    cpu_start = time.process_time()
    start = time.perf_counter()
    last_note = start
    elapsed = 0.0
    while elapsed < seconds or passes == 0:
        dec = codec.FrameDecoder()
        for r in reads:
            frames += len(dec.feed(r))
        passes += 1
        now = time.perf_counter()
        elapsed = now - start
        if seconds > 2 and now - last_note > 2:
            print(
                f"  {label}: {elapsed:.0f}/{seconds:.0f} s, {frames / elapsed:,.0f} frames/s", file=sys.stderr
            )
            last_note = now
    cpu = time.process_time() - cpu_start
    return {
        "frames_per_s": round(frames / elapsed),
        "ns_per_frame": round(elapsed / frames * 1e9, 1),
        # the same over this process's CPU time: on a shared machine, the rate of
        # one core while it was actually running this benchmark
        "frames_per_cpu_s": round(frames / cpu),
        "frames": frames,
        "seconds": round(elapsed, 3),
        "cpu_seconds": round(cpu, 3),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per implementation (default 3)")
    parser.add_argument(
        "--frames", type=int, default=20000, help="distinct frames in the stream (default 20000)"
    )
    parser.add_argument("--read-size", type=int, default=65536, help="bytes per feed() call (default 65536)")
    parser.add_argument(
        "--phones", type=int, default=1, help="distinct terminal phones in the stream (default 1)"
    )
    parser.add_argument("--version", type=int, choices=(2013, 2019), default=2013, help="header layout")
    parser.add_argument("--seed", type=int, default=808)


def main(args: argparse.Namespace) -> int:
    stream, counts = build_mix(args.frames, args.seed, args.phones, args.version)
    reads = _reads(stream, args.read_size)
    impls = impl.implementations()
    if "compiled" not in impls:
        print("telacd bench codec: the compiled extension is not built", file=sys.stderr)
    result: dict[str, Any] = {}
    long_run = args.seconds * len(impls) > 2
    for name in ("compiled", "reference"):
        if name in impls:
            if long_run:
                print(f"bench codec: {name}, {args.seconds:g} s ...", file=sys.stderr)
            result[name] = measure(impls[name], reads, args.frames, args.seconds, name)
    if "compiled" in result:
        result["ratio"] = round(result["compiled"]["frames_per_s"] / result["reference"]["frames_per_s"], 2)
        result["cpu_ratio"] = round(
            result["compiled"]["frames_per_cpu_s"] / result["reference"]["frames_per_cpu_s"], 2
        )
    result["mix"] = counts
    result["stream"] = {
        "frames": args.frames,
        "bytes": len(stream),
        "bytes_per_frame": round(len(stream) / args.frames, 1),
        "read_size": args.read_size,
        "phones": args.phones,
        "version": args.version,
    }
    result["env"] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "gc": gc.isenabled(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for name in ("compiled", "reference"):
            if name in result:
                r = result[name]
                print(
                    f"{name:>9}: {r['frames_per_s']:>12,} frames/s  ({r['ns_per_frame']} ns/frame),"
                    f" {r['frames_per_cpu_s']:,} frames per CPU second"
                )
        if "ratio" in result:
            print(f"    ratio: {result['ratio']}x")
        print(
            f"      mix: {counts}, {result['stream']['bytes_per_frame']} bytes/frame, reads of {args.read_size} B"
        )
    return 0
