"""The sans-IO connection: a platform and a terminal wired together in memory, no sockets
(aioquic's transfer()/roundtrip() pattern), on both codec implementations."""

from __future__ import annotations

from typing import Any

from jt808_helpers import assert_plausible, hexb, vectors

from protocols.jt808 import events as ev
from protocols.jt808 import messages as m
from protocols.jt808.bits import PROFILES
from protocols.jt808.connection import Connection, Role, State
from protocols.jt808.ids import Result

T0 = m.bcd_time(hexb("240315083000"))
PHONE = "013812345678"


def make_pair(codec: Any, platform: dict | None = None, terminal: dict | None = None):
    p = Connection(Role.PLATFORM, codec=codec, **(platform or {}))
    t = Connection(Role.TERMINAL, codec=codec, **({"phone": PHONE} | (terminal or {})))
    return p, t


def online(codec: Any, **kw: Any):
    p, t = make_pair(codec, **kw)
    (reg,) = p.receive_data(t.register(31, 115, "tlcd", "sim", "T1", 1, "粤B12345")[1], 0.0)
    t.receive_data(reg.reply, 0.0)
    (auth,) = p.receive_data(t.authenticate()[1], 0.0)
    t.receive_data(auth.reply, 0.0)
    assert p.state is t.state is State.ONLINE
    return p, t


def test_register_authenticate_report(codec):
    p, t = make_pair(codec)
    serial, data = t.register(31, 115, "tlcd", "sim", "T1", 1, "粤B12345")
    (reg,) = p.receive_data(data, 1.0)
    assert type(reg) is ev.Registered and reg.result == 0 and reg.auth_code
    assert reg.message.body.plate == "粤B12345" and p.state is State.REGISTERED and p.phone == PHONE
    (ans,) = t.receive_data(reg.reply, 1.0)
    assert type(ans) is ev.RegisterAnswered and ans.message.body.reply_serial == serial
    assert t.auth_code == reg.auth_code and t.state is State.REGISTERED

    serial, data = t.authenticate()
    (auth,) = p.receive_data(data, 2.0)
    assert type(auth) is ev.Authenticated and auth.auth_code == reg.auth_code and p.state is State.ONLINE
    (ack,) = t.receive_data(auth.reply, 2.0)
    assert type(ack) is ev.Acknowledged and (ack.reply_serial, ack.result) == (serial, 0)
    assert t.state is State.ONLINE

    serial, data = t.report_location(lat=31.2, lon=121.5, device_time=T0, alarm=1 << 29, items=((0x01, 100),))
    (loc,) = p.receive_data(data, 3.0)
    assert type(loc) is ev.LocationReported
    assert_plausible(loc.location)
    assert loc.location.alarm == 1 << 29 and loc.location.item(0x01) == 100


def test_persist_then_ack(codec):
    p, t = online(codec)
    serials = [t.report_location(lat=1.0, lon=2.0, device_time=T0)[1] for _ in range(3)]
    events = p.receive_data(b"".join(serials), 1.0)
    assert [type(e) for e in events] == [ev.LocationReported] * 3
    assert not any(hasattr(e, "reply") for e in events)  # data is never answered by the connection
    before = p.next_serial
    # the gateway acks after storing, in any order
    acks = [p.ack(events[2]), p.ack(events[0], Result.FAILURE)]
    got = t.receive_data(b"".join(acks), 1.0)
    assert [(a.reply_serial, a.result) for a in got] == [
        (events[2].message.serial, 0),
        (events[0].message.serial, 1),
    ]
    assert [a.message.serial for a in got] == [before, before + 1]  # the platform's own counter
    assert all(a.message.body.reply_id == 0x0200 for a in got)


def test_heartbeat_and_logout_are_answered(codec):
    p, t = online(codec)
    (hb,) = p.receive_data(t.heartbeat()[1], 1.0)
    assert type(hb) is ev.HeartbeatReceived
    (ack,) = t.receive_data(hb.reply, 1.0)
    assert ack.message.body.reply_id == 0x0002
    (bye,) = p.receive_data(t.logout()[1], 2.0)
    assert type(bye) is ev.LoggedOut and p.state is State.CLOSED and t.state is State.CLOSED


def test_data_before_auth_then_authorize(codec):
    p, t = make_pair(codec)
    (early,) = p.receive_data(t.report_location(lat=1.0, lon=2.0, device_time=T0)[1], 1.0)
    assert type(early) is ev.DataBeforeAuth and type(early.event) is ev.LocationReported
    refused = t.receive_data(p.ack(early, Result.FAILURE), 1.0)[0]
    assert refused.result == 1
    p.authorize()  # an "open" policy accepts implicitly
    assert p.state is State.ONLINE
    (later,) = p.receive_data(t.report_location(lat=1.0, lon=2.0, device_time=T0)[1], 2.0)
    assert type(later) is ev.LocationReported


class Strict:
    def __init__(self) -> None:
        self.codes: dict[str, str] = {}

    def register(self, phone: str, request: m.Register) -> tuple[int, str | None]:
        if request.plate == "unknown":
            return 2, "ignored"  # vehicle not in the database
        self.codes[phone] = "code-" + phone[-4:]
        return 0, self.codes[phone]

    def authenticate(self, phone: str, request: m.Authenticate) -> bool:
        return self.codes.get(phone) == request.auth_code


def test_auth_policy_decides(codec):
    policy = Strict()
    p, t = make_pair(codec, platform={"auth_policy": policy})
    (reg,) = p.receive_data(t.register(plate="unknown")[1], 0.0)
    assert (reg.result, reg.auth_code) == (2, None)
    (ans,) = t.receive_data(reg.reply, 0.0)
    assert ans.result == 2 and ans.auth_code is None and t.state is State.NEW
    (bad,) = p.receive_data(t.authenticate("guess")[1], 0.0)
    assert type(bad) is ev.AuthenticationFailed and p.state is State.NEW
    (nack,) = t.receive_data(bad.reply, 0.0)
    assert nack.result == 1 and t.state is State.NEW
    (reg,) = p.receive_data(t.register(plate="粤B1")[1], 0.0)
    t.receive_data(reg.reply, 0.0)
    (ok,) = p.receive_data(t.authenticate()[1], 0.0)
    assert type(ok) is ev.Authenticated and t.auth_code == "code-5678"


def test_malformed_frames(codec):
    p, t = online(codec)
    good = t.heartbeat()[1]
    bad_checksum = good[:-2] + bytes([good[-2] ^ 0x55]) + good[-1:]
    short = hexb("7e0200007e")
    events = p.receive_data(bad_checksum + short + good, 1.0)
    assert [type(e) for e in events] == [ev.FrameRejected, ev.FrameRejected, ev.HeartbeatReceived]
    assert [e.kind for e in events[:2]] == ["checksum", "header_short"]
    # the readable header gets the prescribed 0x8001 "message error"; the unreadable one nothing
    (nack,) = t.receive_data(events[0].reply, 1.0)
    assert nack.result == Result.MESSAGE_ERROR and nack.message.body.reply_id == 0x0002
    assert events[1].reply is None
    lenient = Connection(Role.PLATFORM, codec=codec, lenient_checksum=True)
    (hb,) = lenient.receive_data(bad_checksum, 1.0)
    assert type(hb) is ev.HeartbeatReceived and not hb.message.checksum_ok


def test_a_frame_after_junk_with_a_flag_or_a_cut_off_frame_is_not_lost(codec):
    # junk holding a single 0x7e, and a frame cut off before its end flag: the next
    # frame's start flag is first read as their end flag, and is used again as a start
    for chunked in (False, True):
        p, t = online(codec)
        (s1, hb1), (s2, hb2) = t.heartbeat(), t.heartbeat()
        data = hexb("aa7ebb") + hb1 + hb2[:9] + hb2
        reads = [data[i : i + 1] for i in range(len(data))] if chunked else [data]
        events = [e for r in reads for e in p.receive_data(r, 1.0)]
        assert [type(e) for e in events] == [
            ev.FrameRejected,
            ev.HeartbeatReceived,
            ev.FrameRejected,
            ev.HeartbeatReceived,
        ]
        assert [e.message.serial for e in events[1::2]] == [s1, s2]
        assert p.pending == b"" and p.receive_data(b"", 2.0) == []  # nothing left at EOF


def test_buffer_bound_and_eof(codec):
    p, _t = online(codec, platform={"max_buffer": 256})
    events = p.receive_data(b"\x7e", 1.0)
    for _ in range(20):  # a start flag, then 2000 bytes without an end flag
        events += p.receive_data(b"\x33" * 100, 1.0)
        assert len(p.pending) < 256
    assert [e.kind for e in events] == ["too_large"]
    assert p.receive_data(b"\x7e\x00\x02", 2.0) == []  # the start of a frame, then EOF
    (trunc,) = p.receive_data(b"", 2.0)
    assert trunc.kind == "truncated" and p.state is State.CLOSED


def test_idle_timeout(codec):
    p, t = online(codec, platform={"idle_timeout": 30.0})
    p.receive_data(t.heartbeat()[1], 100.0)
    assert p.get_timer() == 130.0
    assert p.handle_timer(129.0) == []
    (idle,) = p.handle_timer(130.0)
    assert type(idle) is ev.IdleTimeout and idle.idle_s == 30.0
    assert p.get_timer() is None


def test_downlink_commands_and_their_answers(codec):
    p, t = online(codec)
    sent = [
        p.send_text("前方拥堵", flag=0x0C),
        p.call_back("13900001111", monitor=True),
        p.track(10, 600),
        p.confirm_alarm(0, 1 << 0),
        p.query_params(),
        p.media_ack(77, (3,)),
        p.request_resend(9, (2, 4)),
        p.passthrough(0x41, b"\x01"),
    ]
    assert len({s for s, _ in sent}) == len(sent)  # one serial each
    cmds = t.receive_data(b"".join(d for _, d in sent), 1.0)
    assert all(type(c) is ev.CommandReceived for c in cmds)
    assert [c.msg_id for c in cmds] == [0x8300, 0x8400, 0x8202, 0x8203, 0x8104, 0x8800, 0x8003, 0x8900]
    assert cmds[0].command == m.Text(0x0C, None, "前方拥堵")
    assert cmds[1].command == m.CallBack(1, "13900001111")
    assert cmds[2].command == m.TemporaryTracking(10, 600)
    assert cmds[5].command == m.MediaAck(77, (3,))
    assert cmds[6].command == m.ResendRequest(9, (2, 4))
    # the terminal answers each with 0x0001; the platform correlates by reply serial
    answers = p.receive_data(b"".join(t.ack(c) for c in cmds), 2.0)
    assert all(type(a) is ev.CommandAnswered for a in answers)
    assert [(a.reply_serial, a.reply_id) for a in answers] == [(s, c.msg_id) for (s, _), c in zip(sent, cmds)]


def test_locate_is_answered_with_0201(codec):
    p, t = online(codec)
    serial, data = p.locate()
    (cmd,) = t.receive_data(data, 1.0)
    assert cmd.msg_id == 0x8201
    here = m.make_location(-22.9, -43.2, device_time=T0, alarm=1)
    (reply,) = p.receive_data(t.reply_location(cmd, here), 1.0)
    assert type(reply) is ev.LocationReplied and reply.reply_serial == serial and reply.location == here


def test_2019_terminal_gets_2019_replies(codec):
    phone = "00000000013812345678"
    p, t = online(codec, terminal={"phone": phone, "version": 2019})
    (loc,) = p.receive_data(t.report_location(lat=1.0, lon=2.0, device_time=T0)[1], 1.0)
    assert loc.message.version == 2019 and loc.message.phone == phone
    wire = p.ack(loc)
    assert codec.decode_frame(wire).version == 2019
    (ack,) = t.receive_data(wire, 1.0)
    assert ack.message.phone == phone and ack.reply_serial == loc.message.serial
    (cmd,) = t.receive_data(p.send_text("hi", text_type=2)[1], 1.0)
    assert cmd.command == m.Text(0x04, 2, "hi")


def test_one_key_service_call_and_unknown_ids(codec):
    p, t = online(codec)
    (call,) = p.receive_data(t.service_call("道路救援")[1], 1.0)
    assert type(call) is ev.PassthroughReceived
    assert call.message.body.ptype == 0xF0 and call.message.body.data.decode() == "道路救援"
    (other,) = p.receive_data(t.send(0x5501, b"\x01\x02")[1], 1.0)
    assert type(other) is ev.MessageReceived and other.message.body == b"\x01\x02"
    (nack,) = t.receive_data(p.ack(other, Result.NOT_SUPPORTED), 1.0)
    assert (nack.result, nack.message.body.reply_id) == (3, 0x5501)
    enc = codec.encode_frame(0x0200, b"\x01" * 16, PHONE, 9, encrypt=1)
    (secret,) = p.receive_data(enc, 1.0)
    assert type(secret) is ev.MessageReceived and secret.message.encrypt == 1


def test_media_upload_reassembled(codec):
    p, t = online(codec)
    where = m.make_location(30.5, 104.0, device_time=T0)
    jpeg = b"\xff\xd8" + bytes(range(256)) * 12 + b"\xff\xd9"
    serial, data = t.send_media(10013, jpeg, where, event_code=1)
    events = p.receive_data(data, 1.0)
    *packets, media = events
    assert [type(e) for e in packets] == [ev.PacketReceived] * len(packets) and len(packets) == 3
    acks = t.receive_data(b"".join(e.reply for e in packets), 1.0)
    assert [a.reply_serial for a in acks] == [e.message.serial for e in packets]
    assert type(media) is ev.MediaReceived
    body = media.message.body
    assert (body.media_id, body.event_code, body.location, body.data) == (10013, 1, where, jpeg)
    assert media.message.serial == serial  # the completing packet's, which the ack answers
    (mack,) = t.receive_data(p.media_ack(10013)[1], 1.0)
    assert mack.command == m.MediaAck(10013, ())


def test_missing_packets_are_requested_then_expire(codec):
    p, t = online(codec, platform={"reassembly": {"resend_after": 5.0, "timeout": 20.0}})
    jpeg = bytes(2500)
    _, data = t.send_media(5, jpeg, None)
    frames = codec.Splitter().feed(data)
    assert len(frames) == 3
    events = p.receive_data(frames[0] + frames[2], 10.0)  # packet 2 lost
    assert [type(e) for e in events] == [ev.PacketReceived, ev.PacketReceived, ev.PacketsMissing]
    missing = events[-1]
    assert missing.packet_ids == (2,) and missing.first_serial == codec.decode_frame(frames[0]).serial
    (req,) = t.receive_data(missing.reply, 10.0)
    assert req.msg_id == 0x8003 and req.command == m.ResendRequest(missing.first_serial, (2,))
    # the retransmission completes it
    (done,) = p.receive_data(frames[1], 11.0)
    assert type(done) is ev.MediaReceived and done.message.body.data == jpeg
    # a set that never completes: re-requested once after resend_after, dropped after timeout
    p.receive_data(frames[0], 40.0)
    assert p.get_timer() == 45.0
    (again,) = p.handle_timer(45.0)
    assert type(again) is ev.PacketsMissing and again.packet_ids == (2, 3)
    assert p.get_timer() == 60.0
    (gone,) = p.handle_timer(60.0)
    assert type(gone) is ev.ReassemblyExpired and p.get_timer() is None


def test_reassembly_is_bounded(codec):
    p, t = online(codec, platform={"reassembly": {"max_bytes": 1500, "max_sets": 2}})
    _, data = t.send_media(5, bytes(3000), None)
    events = p.receive_data(data, 1.0)
    assert any(type(e) is ev.FrameRejected and e.kind == "too_large" for e in events)
    bad = codec.encode_frame(0x0801, b"x", PHONE, 1, pkg_total=2, pkg_index=3)
    (rej,) = p.receive_data(bad, 1.0)
    assert rej.kind == "subpackage" and rej.reply is not None


def test_public_subpackaged_capture_through_a_connection(codec):
    # the real 10-packet JPEG upload (SmallChi Demo5), whose checksums do not verify
    v = vectors()
    frames = {f["id"]: hexb(f["hex"]) for f in v["frames"]}
    p = Connection(Role.PLATFORM, codec=codec, profile=PROFILES["lenient"], reassembly={"max_bytes": 1 << 16})
    p.authorize()
    events = p.receive_data(b"".join(frames[i] for i in v["groups"]["sc-0801-demo5"]["members"]), 0.0)
    assert [type(e) for e in events] == [ev.PacketReceived] * 9 + [ev.MediaReceived]
    assert events[-1].message.body.media_id == 10013 and not events[-1].message.checksum_ok


def test_connections_are_small(codec):
    p, t = make_pair(codec)
    assert not hasattr(p, "__dict__") and not hasattr(t, "__dict__")


def test_a_flood_of_empty_packets_is_bounded(codec):
    p, _t = online(codec, platform={"reassembly": {"max_bytes": 64 * 1024}})
    flood = b"".join(
        codec.encode_frame(0x0801, b"", PHONE, i, pkg_total=65535, pkg_index=i) for i in range(1, 3000)
    )
    events = p.receive_data(flood, 1.0)
    assert p._reasm.held_bytes <= 64 * 1024
    assert any(type(e) is ev.FrameRejected and e.kind == "too_large" for e in events)


def test_authorized_before_any_frame_learns_the_phone(codec):
    p, t = make_pair(codec)
    p.authorize()
    (loc,) = p.receive_data(t.report_location(lat=1.0, lon=2.0, device_time=T0)[1], 1.0)
    assert type(loc) is ev.LocationReported and p.phone == PHONE
    assert codec.decode_frame(p.locate()[1]).phone == PHONE
