"""Vehicles the gateway knows: identity, auth code, alarm state, last position, connection.

:class:`Terminals` is also the codec's auth policy (``register`` and
``authenticate`` are called synchronously by the connection), so every
terminal's code lives in memory, loaded from the store at start and mirrored
to it on every registration.

Three policies (``[terminals] auth``):

* ``open``: any terminal may report. Registrations are answered with a code,
  any 0x0102 is accepted, and data before authentication is accepted too
  (many devices never register: jt808.md §6.5).
* ``registered``: a terminal must have registered (0x0100) and must present
  the code it was given; data before authentication is refused (0x8001
  result 1) and counted.
* ``fixed``: every terminal presents ``fixed_code``.

A terminal that logs in while another connection holds the same phone
replaces it: the older connection is closed (its vehicle moved to a new
TCP connection, or two devices share a SIM: either way the newest wins).
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from protocols.jt808 import ids
from protocols.jt808 import messages as m

from .store import TerminalRow

if TYPE_CHECKING:
    from .app import Gateway

log = logging.getLogger("telacd.terminals")


class Vehicle:
    """Everything the gateway keeps per vehicle in memory (100k of these must stay small)."""

    __slots__ = (
        "alarm",
        "auth_code",
        "conn",
        "info",
        "last_loc",
        "last_recv",
        "phone",
        "registered_at",
        "registry",
        "sessions",
        "tenant",
        "version",
        "watchers",
    )

    def __init__(self, registry: Terminals, phone: str, tenant: str) -> None:
        self.registry = registry
        self.phone = phone
        self.tenant = tenant
        self.auth_code: str | None = None
        self.registered_at: float | None = None
        self.info: dict[str, Any] | None = None
        self.alarm = 0  # the trigger bits last seen set
        self.last_loc: Any = None  # protocols.jt808.messages.Location
        self.last_recv = 0.0
        self.conn: Any = None  # the TcuProtocol holding this vehicle, or None
        self.version = 2013
        self.sessions: set[str] | None = None  # open session ids
        self.watchers = 0  # open sessions with an agent who wants live positions

    def set_alarm(self, bits: int) -> None:
        if bits != self.alarm:
            self.alarm = bits
            self.registry.dirty.add(self)

    @property
    def online(self) -> bool:
        return self.conn is not None and not self.conn.closed


class Terminals:
    """The registry and auth policy."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.vehicles: dict[str, Vehicle] = {}
        self.dirty: set[Vehicle] = set()
        self.configure()

    def configure(self) -> None:
        t = self.gw.cfg.terminals
        self.policy = t["auth"]
        self.fixed_code = t["fixed_code"]
        self.open_policy = self.policy == "open"

    async def load(self) -> None:
        for row in await self.gw.store.list_terminals(limit=10_000_000):
            v = Vehicle(self, row.phone, row.tenant or self.gw.cfg.tenant_of(row.phone))
            v.auth_code = row.auth_code
            v.registered_at = row.registered_at
            v.info = row.info or None
            v.alarm = row.last_alarm
            self.vehicles[row.phone] = v

    def vehicle(self, phone: str) -> Vehicle:
        v = self.vehicles.get(phone)
        if v is None:
            v = self.vehicles[phone] = Vehicle(self, phone, self.gw.cfg.tenant_of(phone))
        return v

    # -- AuthPolicy (called synchronously by the codec) ----------------------------------------

    def register(self, phone: str, request: m.Register) -> tuple[int, str | None]:
        if self.policy == "fixed":
            return ids.RegisterResult.SUCCESS, self.fixed_code
        v = self.vehicle(phone)
        if not v.auth_code:
            v.auth_code = secrets.token_hex(6)
        v.registered_at = time.time()
        v.info = {
            "province": request.province,
            "city": request.city,
            "maker": request.maker,
            "model": request.model,
            "terminal_id": request.terminal_id,
            "plate_color": request.plate_color,
            "plate": request.plate,
        }
        self.gw.spawn(self.gw.store.save_terminals([self.row(v)]), "save registration")
        return ids.RegisterResult.SUCCESS, v.auth_code

    def authenticate(self, phone: str, request: m.Authenticate) -> bool:
        if self.policy == "open":
            return True
        if self.policy == "fixed":
            return request.auth_code == self.fixed_code
        v = self.vehicles.get(phone)
        return v is not None and v.auth_code is not None and request.auth_code == v.auth_code

    # -- connections ---------------------------------------------------------------------------

    def registered(self, event: Any, proto: Any) -> None:
        """A 0x0100 was answered; nothing more to do until it authenticates."""
        v = self.vehicles.get(event.message.phone)
        if v is not None:
            v.version = event.message.version

    def bind(self, phone: str, proto: Any) -> Vehicle:
        v = self.vehicle(phone)
        v.version = proto.conn.version
        old = v.conn
        if old is not None and old is not proto and not old.closed:
            self.gw.metrics.connections_closed_duplicate += 1
            old.vehicle = None  # its connection_lost must not unbind the new one
            old.close(f"duplicate login of {phone} from {proto.peer}")
        v.conn = proto
        self.gw.downlink.online(v)
        return v

    def unbind(self, v: Vehicle, proto: Any) -> None:
        if v.conn is proto:
            v.conn = None
            self.dirty.add(v)

    # -- persistence ---------------------------------------------------------------------------

    def row(self, v: Vehicle) -> TerminalRow:
        loc = v.last_loc
        pos = None
        if loc is not None:
            pos = self.gw.position_json(loc, v.last_recv)
        return TerminalRow(
            phone=v.phone,
            tenant=v.tenant,
            auth_code=v.auth_code,
            registered_at=v.registered_at,
            info=v.info or {},
            last_seen=v.last_recv or None,
            last_position=pos,
            last_alarm=v.alarm,
        )

    async def flush(self) -> None:
        """Write vehicles whose alarm state changed or that went offline."""
        if not self.dirty:
            return
        batch, self.dirty = self.dirty, set()
        try:
            await self.gw.store.save_terminals([self.row(v) for v in batch])
        except Exception as e:
            self.dirty |= batch
            log.warning("terminal state not saved (will retry): %s", e)

    def online_count(self) -> int:
        return sum(1 for v in self.vehicles.values() if v.conn is not None)
