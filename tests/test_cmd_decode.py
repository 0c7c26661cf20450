"""``telacd decode``: keys, error objects, exit status, --lenient, --raw, stdin, --zone, --model."""

from __future__ import annotations

import io
import json
import pathlib
import sys

import pytest

from gateway import cli, cmd_decode
from protocols.jt808 import impl

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


# ---------------------------------------------------------------------------
# resynchronising, --raw errors, the header version, lat/lon, items (both codecs)

HEARTBEAT_1 = "7e000200000138123456780001327e"
# a 0x0200 cut off after 11 content bytes, a whole 0x0200 (serial 2), a heartbeat (serial 3)
CUT_OFF_STREAM = (
    "7e0200001c01381234567800"
    "7e0200001c0138123456780002200000000000000301dc89d0073d8aa5000c0232005a240315083000f37e"
    "7e000200000138123456780003307e"
)
# 0x0100 with a 2019 header (bit 14, BCD[10] phone) and a 27-byte (2011-layout) body
REGISTER_2019_SHORT = (
    "7e0100401b01000000000138123456780001002c012c544c43440053494d2d3100000054303030310000014231197e"
)
# 0x0200: lat 0.000001, lon -0.000002 (status bit 3); item 0xe0 = 5, then 0x99 declaring
# 9 bytes with 2 present (the item list is cut)
TINY_DEGREES_CUT_ITEMS = (
    "7e020000230138123456780009000000000000000b0000000100000002000000000000000000000000e0010599090102667e"
)


@pytest.fixture(params=["reference", "compiled"])
def each_codec(request, monkeypatch):
    """Run telacd decode over each codec implementation (the compiled one if it was built)."""
    found = impl.implementations()
    if request.param not in found:
        pytest.skip("the compiled extension was not built")
    monkeypatch.setattr(cmd_decode, "codec", found[request.param])


def _summary(objs: list[dict]) -> list:
    return [o.get("serial", o.get("error")) for o in objs]


@pytest.mark.usefixtures("each_codec")
@pytest.mark.parametrize(
    "stream, expected",
    [
        ("aa7ebb" + HEARTBEAT_1, ["header_short", 1]),  # junk holding a single 0x7e
        (CUT_OFF_STREAM, ["header_short", 2, 3]),  # a cut-off frame
        ("7e000200000138123456780001337e" + HEARTBEAT_1[2:], ["checksum", 1]),  # a shared flag
    ],
)
def test_raw_keeps_the_frame_after_junk_or_a_cut_off_frame(capfd, tmp_path, monkeypatch, stream, expected):
    path = tmp_path / "capture.bin"
    path.write_bytes(bytes.fromhex(stream))
    code, objs = run(capfd, "--raw", str(path))
    assert code == 1 and _summary(objs) == expected
    code, objs = run(capfd, stream)  # hex arguments are split the same way
    assert code == 1 and _summary(objs) == expected
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(bytes.fromhex(stream))))
    code, objs = run(capfd, "--raw", "-")
    assert code == 1 and _summary(objs) == expected


@pytest.mark.usefixtures("each_codec")
def test_raw_lone_flags_are_not_frames(capfd):
    code, objs = run(capfd, "7ebb7e7e")  # the bad candidate's flag, then one more: nothing lost
    assert code == 1 and _summary(objs) == ["header_short"]
    code, (obj,) = run(capfd, "aa7e")
    assert code == 1 and obj["error"] == "truncated" and obj["detail"] == "no frame (a lone 0x7e flag)"


def test_raw_file_that_cannot_be_read(capfd, tmp_path):
    missing = tmp_path / "nonexistent.bin"
    assert cli.main(["decode", "--raw", str(missing)]) == 2
    out, err = capfd.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert str(missing) in err and "No such file or directory" in err
    assert cli.main(["decode", "--raw", str(tmp_path)]) == 2  # a directory
    assert "Is a directory" in capfd.readouterr().err


@pytest.mark.usefixtures("each_codec")
def test_version_is_the_headers(capfd):
    _, (obj,) = run(capfd, REGISTER_2019_SHORT)
    assert obj["version"] == "2019" and obj["phone"] == "00000000013812345678"
    assert obj["body"]["layout"] == 2011 and obj["body"]["model"] == "SIM-1"
    _, (obj,) = run(capfd, FRAMES["go-0100-2011"])  # a 2013 header: the body is the only tell
    assert obj["version"] == "2011" and obj["body"]["layout"] == 2011


@pytest.mark.usefixtures("each_codec")
def test_lat_lon_are_plain_decimals(capfd):
    for indent in ([], ["--indent"]):
        assert cli.main(["decode", *indent, TINY_DEGREES_CUT_ITEMS]) == 0
        text = capfd.readouterr().out.replace(" ", "")
        assert '"lat":0.000001,' in text and '"lon":-0.000002,' in text and "e-0" not in text
        body = json.loads(text)["body"]
        assert (body["lat"], body["lon"]) == (0.000001, -0.000002)  # still JSON numbers
    _, (obj,) = run(capfd, COLLISION)
    assert (obj["body"]["lat"], obj["body"]["lon"]) == (31.230416, 121.473701)


@pytest.mark.usefixtures("each_codec")
def test_cut_item_list_and_custom_items_length(capfd):
    _, (obj,) = run(capfd, TINY_DEGREES_CUT_ITEMS)
    body = obj["body"]
    assert list(body) == [*LOCATION_KEYS, "items_truncated"] and body["items_truncated"] is True
    assert body["items"] == {"custom_items_len": 5, "0x99": "0102"}  # the cut item kept raw
    _, (obj,) = run(capfd, COLLISION)
    assert "items_truncated" not in obj["body"]  # only when the list was cut
