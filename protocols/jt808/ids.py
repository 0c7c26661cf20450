"""JT/T 808 message ids, result codes and their names.

Constants use the spec's names (``MSG_LOCATION_REPORT = 0x0200``) so a grep for
the hex id in the spec finds the code. ``MSG_NAMES`` gives the short snake_case
name that ``telacd decode`` prints as ``msg_name``.
"""

from __future__ import annotations

from enum import IntEnum

# terminal -> platform
MSG_TERMINAL_GENERAL_RESPONSE = 0x0001
MSG_HEARTBEAT = 0x0002
MSG_LOGOUT = 0x0003
MSG_TERMINAL_RESEND_REQUEST = 0x0005  # 2019: the terminal asks the platform to resend packets
MSG_REGISTER = 0x0100
MSG_AUTHENTICATE = 0x0102
MSG_QUERY_PARAMS_RESPONSE = 0x0104
MSG_LOCATION_REPORT = 0x0200
MSG_LOCATION_QUERY_RESPONSE = 0x0201
MSG_LOCATION_BATCH = 0x0704
MSG_MEDIA_EVENT = 0x0800
MSG_MEDIA_DATA = 0x0801
MSG_CAMERA_RESPONSE = 0x0805
MSG_UPLINK_PASSTHROUGH = 0x0900

# platform -> terminal
MSG_PLATFORM_GENERAL_RESPONSE = 0x8001
MSG_RESEND_REQUEST = 0x8003
MSG_SERVER_TIME = 0x8004
MSG_REGISTER_RESPONSE = 0x8100
MSG_SET_PARAMS = 0x8103
MSG_QUERY_PARAMS = 0x8104
MSG_LOCATION_QUERY = 0x8201
MSG_TEMPORARY_TRACKING = 0x8202
MSG_ALARM_CONFIRM = 0x8203
MSG_TEXT = 0x8300
MSG_CALL_BACK = 0x8400
MSG_MEDIA_ACK = 0x8800
MSG_TAKE_PHOTO = 0x8801
MSG_DOWNLINK_PASSTHROUGH = 0x8900

MSG_NAMES: dict[int, str] = {
    0x0001: "terminal_general_response",
    0x0002: "heartbeat",
    0x0003: "logout",
    0x0005: "terminal_resend_request",
    0x0100: "register",
    0x0102: "authenticate",
    0x0104: "query_params_response",
    0x0107: "terminal_attributes_response",
    0x0108: "upgrade_result",
    0x0200: "location_report",
    0x0201: "location_query_response",
    0x0301: "event_report",
    0x0302: "question_answer",
    0x0500: "vehicle_control_response",
    0x0704: "location_batch",
    0x0705: "can_data",
    0x0800: "media_event",
    0x0801: "media_data",
    0x0805: "camera_response",
    0x0900: "uplink_passthrough",
    0x0A00: "terminal_rsa_key",
    0x1205: "av_resource_list",
    0x8001: "platform_general_response",
    0x8003: "resend_request",
    0x8004: "server_time",
    0x8100: "register_response",
    0x8103: "set_params",
    0x8104: "query_params",
    0x8201: "location_query",
    0x8202: "temporary_tracking",
    0x8203: "alarm_confirm",
    0x8300: "text",
    0x8400: "call_back",
    0x8800: "media_ack",
    0x8801: "take_photo",
    0x8900: "downlink_passthrough",
}


def msg_name(msg_id: int) -> str:
    """The short name of a message id; ids outside the table read ``unknown_0x1234``."""
    return MSG_NAMES.get(msg_id) or f"unknown_0x{msg_id:04x}"


class Result(IntEnum):
    """General response results (0x0001 / 0x8001). JT/T 808-2013 tables 4-5."""

    SUCCESS = 0
    FAILURE = 1
    MESSAGE_ERROR = 2
    NOT_SUPPORTED = 3
    ALARM_CONFIRMED = 4  # platform only: "alarm processing confirmation"


class RegisterResult(IntEnum):
    """0x8100 results. JT/T 808-2013 table 7. Only SUCCESS carries an auth code."""

    SUCCESS = 0
    VEHICLE_REGISTERED = 1
    VEHICLE_UNKNOWN = 2
    TERMINAL_REGISTERED = 3
    TERMINAL_UNKNOWN = 4


class PassthroughType(IntEnum):
    """Common 0x0900/0x8900 passthrough types; 0xF0-0xFF are user-defined."""

    GNSS_DETAIL = 0x00
    IC_CARD = 0x0B
    SERIAL_1 = 0x41
    SERIAL_2 = 0x42
    ONE_KEY_SERVICE = 0xF0  # telacd's one-key service call: UTF-8 or GBK request text
