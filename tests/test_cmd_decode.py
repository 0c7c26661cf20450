"""``telacd decode``: keys, error objects, exit status, --lenient, --raw, stdin, --zone, --model."""

from __future__ import annotations

import io
import json
import pathlib
import sys

import pytest

from gateway import cli, cmd_decode

VECTORS = json.loads(
    (pathlib.Path(__file__).parent / "data" / "jt808_public.json").read_text(encoding="utf-8")
)
FRAMES = {f["id"]: f["hex"] for f in VECTORS["frames"]}

# hand-built (see tests/protocols/jt808/test_jt808_framing.py): collision alarm, 2013
COLLISION = "7e020000280138123456780031200000000000000301dc89d0073d8aa5000c0232005a24031508300001040001e24030011931010c467e"
TOP_KEYS = ["msg_id", "msg_name", "phone", "serial", "version", "subpackage", "checksum_ok", "body"]
LOCATION_KEYS = [
    "alarm",
    "alarms",
    "status",
    "lat",
    "lon",
    "altitude_m",
    "speed_kmh",
    "direction",
    "time",
    "items",
]


def run(capfd, *argv: str) -> tuple[int, list[dict]]:
    code = cli.main(["decode", *argv])
    out = capfd.readouterr().out
    return code, [json.loads(line) for line in out.splitlines() if line]


def test_location_report(capfd):
    code, (obj,) = run(capfd, COLLISION)
    assert code == 0
    assert list(obj) == TOP_KEYS
    assert obj["msg_id"] == 0x0200 and obj["msg_name"] == "location_report"
    assert (obj["phone"], obj["serial"], obj["version"], obj["subpackage"], obj["checksum_ok"]) == (
        "013812345678",
        0x31,
        "2013",
        None,
        True,
    )
    body = obj["body"]
    assert list(body) == LOCATION_KEYS
    assert body["alarm"] == 1 << 29 and body["alarms"] == ["collision"]
    assert (body["lat"], body["lon"], body["altitude_m"], body["speed_kmh"], body["direction"]) == (
        31.230416,
        121.473701,
        12,
        56.2,
        90,
    )
    assert body["time"] == "2024-03-15T08:30:00+08:00"
    assert body["items"] == {"mileage_km": 12345.6, "rssi": 25, "satellites": 12}


def test_phone_keeps_leading_zeros_and_2019(capfd):
    _, (obj,) = run(capfd, FRAMES["hy-0200-2019-sos"])
    assert obj["phone"] == "00000000013912344329" and obj["version"] == "2019"
    assert obj["body"]["lat"] == -31.234567  # status bit 2: south
    assert obj["body"]["alarms"][0] == "emergency"


def test_0201_and_0704_shapes(capfd):
    _, (q, b) = run(capfd, FRAMES["sc-0201"], FRAMES["hy-0704-2019"])
    assert q["body"]["reply_serial"] == 12345 and list(q["body"]["location"]) == LOCATION_KEYS
    assert q["body"]["location"]["items"] == {"mileage_km": 10.0, "fuel_l": 5.5}
    assert b["body"]["batch_type"] == 0 and len(b["body"]["positions"]) == 2
    assert all(list(p) == LOCATION_KEYS for p in b["body"]["positions"])


def test_unknown_items_by_hex_id(capfd):
    _, (obj,) = run(capfd, "--lenient", FRAMES["sc-0200-bad-items-1"])
    items = obj["body"]["items"]
    assert items["0x00"] == ["00ce0b29", "00b222222222222222222222"]  # repeated vendor id: every value
    assert items["0xeb"].startswith("000c00b2")


def test_errors_continue_and_set_the_exit_status(capfd):
    code, objs = run(
        capfd, FRAMES["go-err-checksum"], COLLISION, "7e0200", "xyz", FRAMES["go-err-bad-escape"]
    )
    assert code == 1
    assert [o.get("error") for o in objs] == ["checksum", None, "truncated", "hex", "escape"]
    assert objs[0]["hex"] == FRAMES["go-err-checksum"] and objs[0]["detail"]
    assert set(objs[0]) == {"error", "detail", "hex"}


def test_lenient_decodes_bad_checksums(capfd):
    frame = FRAMES["sc-0200-bad-items-2"]
    code, (obj,) = run(capfd, frame)
    assert code == 1 and obj["error"] == "checksum"
    code, (obj,) = run(capfd, "--lenient", frame)
    assert code == 0 and obj["checksum_ok"] is False and obj["body"]["speed_kmh"] == 0.0


def test_subpackage_and_encrypted(capfd):
    _, (first, enc) = run(capfd, "--lenient", FRAMES["sc-0801-demo5-sub01"], FRAMES["go-rsa-flag"])
    assert first["subpackage"] == {"total": 10, "index": 1}
    assert first["body"]["media"]["media_id"] == 10013 and first["body"]["media"]["data_len"] == 768
    assert enc["body"] == {"raw": "001a000221", "encrypted": 1}


def test_register_2011_and_text(capfd):
    _, (reg, text) = run(capfd, FRAMES["go-0100-2011"], FRAMES["hy-8300-2019"])
    assert reg["version"] == "2011" and reg["body"]["plate"] == "测A1234"
    assert text["body"] == {"flag": 1, "text_type": 1, "text": "HelloWorld 汉字 GBK 编码"}


def test_stdin_one_frame_per_line(capfd, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"# a comment\n{COLLISION}\n\n{FRAMES['sc-0002']}\n"))
    code, objs = run(capfd)
    assert code == 0 and [o["msg_id"] for o in objs] == [0x0200, 0x0002]


def test_raw_capture_file(capfd, tmp_path):
    stream = next(s for s in VECTORS["streams"] if s["id"] == "go-bad-middle-frame")["chunks"][0]
    path = tmp_path / "capture.bin"
    path.write_bytes(b"junk" + bytes.fromhex(stream) + bytes.fromhex(COLLISION)[:10])
    code, objs = run(capfd, "--raw", str(path))
    assert code == 1
    assert [o.get("msg_id", o.get("error")) for o in objs] == [2, "header_short", 2, "truncated"]


def test_zone_and_model(capfd):
    _, (obj,) = run(capfd, "--zone=-05:00", COLLISION)  # "=" because of the leading minus
    assert obj["body"]["time"] == "2024-03-15T08:30:00-05:00"
    _, (obj,) = run(capfd, "--model", "utc", COLLISION)
    assert obj["body"]["time"] == "2024-03-15T08:30:00+00:00"
    _, (obj,) = run(capfd, "--model", "tracker", COLLISION)
    assert obj["body"]["alarms"] == ["collision"]
    assert cli.main(["decode", "--model", "nope", COLLISION]) == 2
    assert cli.main(["decode", "--zone", "+25:00", COLLISION]) == 2


@pytest.mark.parametrize("text, seconds", [("+08:00", 28800), ("-0530", -19800), ("+8", 28800), ("Z", 0)])
def test_parse_zone(text, seconds):
    assert cmd_decode.parse_zone(text) == seconds


def test_every_public_vector_prints_json(capfd):
    code, objs = run(capfd, "--lenient", *FRAMES.values())
    assert len(objs) == len(FRAMES)
    errors = [f["id"] for f in VECTORS["frames"] if "error" in f["expect"]]
    assert sum("error" in o for o in objs) == len(errors) - 2  # checksum and length decode in lenient mode
    assert code == 1
