"""JT/T 808 (2011/2013/2019): sans-IO framing, messages and connection, both roles.

The public surface, all importable from this package:

* codec (compiled or reference, see :mod:`.impl`): ``FrameDecoder``,
  ``Splitter``, ``decode_frame``, ``encode_frame``, ``encode_general_response``, ``encode_ack``,
  ``checksum``, ``escape``, ``unescape``, ``frame_ok``, ``IMPLEMENTATION``;
* records (:mod:`.messages`): ``Message``, ``Header``, ``Location`` and the body
  records, ``decode_body``, ``encode_body``, ``make_location``;
* the connection (:mod:`.connection`): ``Connection``, ``Role``, ``State``,
  ``OpenAuthPolicy``, and its events (:mod:`.events`);
* alarm/status names and device profiles (:mod:`.bits`), ids (:mod:`.ids`),
  errors (:mod:`.errors`).

See docs/jt808.md for a tour.
"""

from . import events, ids
from .bits import DEFAULT_PROFILE, PROFILES, DeviceProfile, get_profile, status_names
from .connection import AuthPolicy, Connection, OpenAuthPolicy, Role, State
from .errors import (
    ChecksumError,
    EscapeError,
    FrameTooLargeError,
    HeaderShortError,
    Jt808LocalError,
    Jt808ProtocolError,
    LengthError,
    TruncatedError,
)
from .ids import Result
from .impl import (
    IMPLEMENTATION,
    FrameDecoder,
    Splitter,
    checksum,
    decode_frame,
    encode_ack,
    encode_frame,
    encode_general_response,
    escape,
    frame_ok,
    unescape,
)
from .messages import (
    EMPTY,
    AlarmConfirm,
    Authenticate,
    CallBack,
    Empty,
    GeneralResponse,
    Header,
    Location,
    LocationBatch,
    LocationQueryResponse,
    MediaAck,
    MediaData,
    MediaEvent,
    Message,
    Passthrough,
    QueryParamsResponse,
    Register,
    RegisterResponse,
    ResendRequest,
    ServerTime,
    TakePhoto,
    TemporaryTracking,
    Text,
    decode_body,
    encode_body,
    make_location,
)
from .reassembly import Reassembler, SubpackageError

__all__ = [
    "DEFAULT_PROFILE",
    "EMPTY",
    "IMPLEMENTATION",
    "PROFILES",
    "AlarmConfirm",
    "AuthPolicy",
    "Authenticate",
    "CallBack",
    "ChecksumError",
    "Connection",
    "DeviceProfile",
    "Empty",
    "EscapeError",
    "FrameDecoder",
    "FrameTooLargeError",
    "GeneralResponse",
    "Header",
    "HeaderShortError",
    "Jt808LocalError",
    "Jt808ProtocolError",
    "LengthError",
    "Location",
    "LocationBatch",
    "LocationQueryResponse",
    "MediaAck",
    "MediaData",
    "MediaEvent",
    "Message",
    "OpenAuthPolicy",
    "Passthrough",
    "QueryParamsResponse",
    "Reassembler",
    "Register",
    "RegisterResponse",
    "ResendRequest",
    "Result",
    "Role",
    "ServerTime",
    "Splitter",
    "State",
    "SubpackageError",
    "TakePhoto",
    "TemporaryTracking",
    "Text",
    "TruncatedError",
    "checksum",
    "decode_body",
    "decode_frame",
    "encode_ack",
    "encode_body",
    "encode_frame",
    "encode_general_response",
    "escape",
    "events",
    "frame_ok",
    "get_profile",
    "ids",
    "make_location",
    "status_names",
    "unescape",
]
