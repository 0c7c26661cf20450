# Types of the compiled fast path; the same names and behaviour as codec.py.
from typing import Any

from .bits import DeviceProfile
from .messages import Message

IMPLEMENTATION: str
DEFAULT_MAX_BUFFER: int

def checksum(data: bytes) -> int: ...
def escape(data: bytes) -> bytes: ...
def unescape(content: bytes, lenient_trailing_7d: bool = ...) -> bytes: ...

class Splitter:
    max_buffer: int
    def __init__(self, max_buffer: int = ...) -> None: ...
    def feed(self, data: bytes) -> list[Any]: ...
    @property
    def pending(self) -> bytes: ...

class FrameDecoder:
    max_buffer: int
    profile: DeviceProfile
    wrapped: int
    def __init__(self, profile: DeviceProfile | None = ..., max_buffer: int = ...) -> None: ...
    def feed(self, data: bytes, wrap: Any = ...) -> list[Any]: ...
    @property
    def pending(self) -> bytes: ...

def decode_frame(frame: bytes, profile: DeviceProfile | None = ...) -> Message: ...
def encode_frame(
    msg_id: int,
    body: bytes,
    phone: str | bytes,
    serial: int,
    version: int = ...,
    proto_version: int = ...,
    pkg_total: int = ...,
    pkg_index: int = ...,
    encrypt: int = ...,
) -> bytes: ...
def encode_general_response(
    phone: str | bytes,
    version: int,
    proto_version: int,
    serial: int,
    reply_serial: int,
    reply_id: int,
    result: int,
    msg_id: int = ...,
) -> bytes: ...
def encode_ack(event: Any, serial: int, result: int = ..., msg_id: int = ...) -> bytes: ...
def encode_location(loc: Any) -> bytes: ...
