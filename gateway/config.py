"""Configuration: TOML file over embedded defaults, then ``TELACD_*`` environment overrides.

Loading happens once at start, and again on ``POST /api/reload`` or SIGHUP:
then everything but :data:`RESTART_ONLY` is applied (see :func:`keep_running`). Every problem is reported as a :class:`ConfigError`
naming the file, the key and the reason, and the gateway refuses to start:
a gateway that runs on a half-understood configuration routes crash alerts
to the wrong place.

Layers, later wins:

1. ``DEFAULTS`` below: every scalar key with its documented default, the two
   default queues (``emergency`` and ``service``) and the four default
   triggers (alarm bit 0 ``sos``, 29 ``crash``, 30 ``rollover``; passthrough
   type 0xF0 ``service``).
2. The TOML file (``--config FILE``). Scalar sections replace key by key.
   ``[[queues]]`` and ``[[triggers]]`` merge with the defaults by ``name`` /
   ``kind``: an entry with a default's name replaces it, a new name is added.
   ``[[agents]]``, ``[[subscribers]]`` and ``[[admins]]`` have no defaults.
3. Environment: ``TELACD_<SECTION>_<KEY>`` for a scalar (``TELACD_GATEWAY_TCP``,
   ``TELACD_STORE_URL``), parsed to the type of the default; ``TELACD_QUEUES``,
   ``TELACD_AGENTS``, ``TELACD_SUBSCRIBERS``, ``TELACD_ADMINS`` and
   ``TELACD_TRIGGERS`` take a JSON array that replaces the whole list.

The reference of every key is docs/configuration.md; deploy/telacd.toml is an
annotated example.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

STRATEGIES = (
    "longest-idle",
    "fewest-answered",
    "least-talk-time",
    "round-robin",
    "top-down",
    "most-skilled",
    "random",
    "ring-all",
    "ring-progressively",
)
CHANNELS = ("voice", "data", "chat")


class ConfigError(Exception):
    """A configuration problem: ``source: key: reason``."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        self.source, self.key, self.reason = source, key, reason
        super().__init__(f"{source}: {key}: {reason}")


# ---------------------------------------------------------------------------
# Defaults. Scalars are grouped by section; the type of each default is the
# type the key must have (int keys accept no float, float keys accept int).

SCALARS: dict[str, dict[str, Any]] = {
    "gateway": {
        "tcp": "127.0.0.1:6808",  # TCU listener (JT/T 808 over TCP); "" disables
        "quic": "",  # TCU listener over QUIC, e.g. "127.0.0.1:6809"; "" disables
        "quic_cert": "",  # PEM certificate for QUIC (telacd cert DIR makes one)
        "quic_key": "",  # PEM private key for QUIC
        "http": "127.0.0.1:8080",  # admin API, /agent and /feed WebSockets, /metrics, dashboard
        "agent_tcp": "127.0.0.1:6810",  # agents over length-prefixed msgpack; "" disables
        "feed_tcp": "127.0.0.1:6811",  # subscribers over length-prefixed msgpack; "" disables
        "workers": 1,  # TCU acceptor processes (SO_REUSEPORT); the ACD lives in one
        "name": "telacd",  # instance name, shown in /api/health and the dashboard
    },
    "store": {
        "url": "sqlite:///./telacd-data/telacd.db",  # or postgresql://user@host:5432/db
        "sync": "normal",  # sqlite: "normal" survives a process crash, "full" also power loss
        "location_batch": 2000,  # rows per location write
        "location_flush_ms": 200,  # flush a partial batch after this long
        "location_queue_max": 200000,  # locations waiting for the writer; beyond it GPS is shed (counted)
        "pool_size": 4,  # postgresql connections
        "commit_timeout_s": 10.0,  # postgresql: a session commit retried through an outage fails after this
    },
    "terminals": {
        "auth": "open",  # open | registered | fixed
        "fixed_code": "",  # the auth code every terminal must present when auth = "fixed"
        "default_tenant": "default",  # tenant of a vehicle no prefix below matches
        "heartbeat_timeout_s": 180.0,  # close a terminal silent for this long
        "max_buffer": 4096,  # bytes of an unfinished escaped frame before the connection is closed
        "max_malformed": 10,  # malformed frames before the connection is closed
        "max_frames_per_s": 200,  # sustained frame rate per connection before reads are paused
        "lenient_checksum": False,  # decode frames with a bad checksum (flagged) instead of rejecting
        "device_zone": "+08:00",  # device clock zone (the standard says GMT+8)
        "model": "",  # device-model profile applied to every terminal ("" = standard)
        "send_buffer_high": 65536,  # pause reading a terminal whose unsent replies exceed this
        "rcvbuf": 16384,  # kernel receive buffer of a terminal socket, bytes (0: the system default)
        "overload_lag_ms": 20,  # event-loop lag that puts the gateway in overload (GPS storage thinned)
        "overload_keep_s": 10.0,  # in overload, store one position per vehicle per this many seconds
        "overload_commit_ms": 20,  # a session commit slower than this (an alert waiting) also thins GPS storage
    },
    "sessions": {
        "trail_minutes": 10.0,  # minutes of trail attached to a session
        "agent_grace_s": 30.0,  # an agent that reconnects within this keeps its sessions
        "command_timeout_s": 10.0,  # downlink answer timeout (first try; doubles per retry)
        "command_retries": 2,  # downlink retransmissions before a command fails
        "offline_command_ttl_s": 3600.0,  # default expiry of commands queued for an offline vehicle
        "unresolved_after_s": 0.0,  # escalate a session open longer than this (0 = never)
        "unresolved_queue": "",  # the supervisor queue unresolved sessions go to
        "position_push_ms": 1000,  # at most one live position per session per this interval
    },
    "tenants": {},  # phone prefix -> tenant, e.g. { "013800" = "oem-a" }
}

DEFAULT_QUEUES: list[dict[str, Any]] = [
    {
        "name": "emergency",
        "tenant": "*",
        "strategy": "most-skilled",
        "skills": {"emergency": 1},
        "order": "edf",
        "offer_timeout_s": 15.0,
        "wrapup_s": 10.0,
        "max_no_answer": 3,
        "sticky_s": 120.0,
        "preempt_wrapup": True,
        "aging_per_s": 0.0,
        "sl_threshold_s": 10.0,
        # crash above SOS above rollover; target_s is the class's answer target (its deadline)
        "classes": [
            {"name": "crash", "priority": 300, "target_s": 10.0},
            {"name": "sos", "priority": 200, "target_s": 10.0},
            {"name": "rollover", "priority": 100, "target_s": 15.0},
        ],
        # after 30 s unanswered, any agent of the tenant with any emergency skill level;
        # after 60 s, the shared emergency pool across tenants
        "escalation": [
            {"after_s": 30.0, "skills": {}},
            {"after_s": 60.0, "skills": {"emergency": 1}, "shared": True},
        ],
    },
    {
        "name": "service",
        "tenant": "*",
        "strategy": "longest-idle",
        "skills": {"service": 1},
        "order": "priority",
        "offer_timeout_s": 20.0,
        "wrapup_s": 15.0,
        "max_no_answer": 3,
        "sticky_s": 600.0,
        "preempt_wrapup": False,
        "aging_per_s": 0.1,
        "sl_threshold_s": 20.0,
        "classes": [
            {"name": "vip", "priority": 20, "target_s": 20.0},
            {"name": "normal", "priority": 10, "target_s": 60.0},
        ],
        "escalation": [],
    },
]

DEFAULT_TRIGGERS: list[dict[str, Any]] = [
    {"kind": "crash", "alarm_bit": 29, "queue": "emergency", "class": "crash"},
    {"kind": "sos", "alarm_bit": 0, "queue": "emergency", "class": "sos"},
    {"kind": "rollover", "alarm_bit": 30, "queue": "emergency", "class": "rollover"},
    {"kind": "service", "passthrough_type": 0xF0, "queue": "service", "class": "normal"},
]


# ---------------------------------------------------------------------------
# Typed views handed to the rest of the gateway.


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ClassSpec:
    name: str
    priority: int
    target_s: float


@dataclass(frozen=True, slots=True)
class StepSpec:
    after_s: float
    skills: dict[str, int] | None = None  # None: keep the queue's skills
    agents: tuple[str, ...] = ()
    queue: str = ""
    shared: bool = False  # the target pool is shared by every tenant


@dataclass(frozen=True, slots=True)
class QueueSpec:
    name: str
    tenant: str
    strategy: str
    skills: dict[str, int]
    order: str  # "priority" or "edf"
    offer_timeout_s: float
    wrapup_s: float
    max_no_answer: int
    sticky_s: float
    preempt_wrapup: bool
    aging_per_s: float
    sl_threshold_s: float
    classes: tuple[ClassSpec, ...]
    escalation: tuple[StepSpec, ...]
    agents: tuple[str, ...] = ()  # ordered list for top-down, and ring targets
    progressive_step_s: float = 5.0

    def klass(self, name: str) -> ClassSpec:
        for c in self.classes:
            if c.name == name:
                return c
        return self.classes[-1]


@dataclass(frozen=True, slots=True)
class AgentSpec:
    id: str
    token: str
    tenants: tuple[str, ...]
    skills: dict[str, int]
    capacity: dict[str, int]
    name: str = ""
    phone: str = ""  # where 0x8400 call-backs ring
    wrapup_s: float | None = None


@dataclass(frozen=True, slots=True)
class SubscriberSpec:
    id: str
    token: str
    filter: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AdminSpec:
    id: str
    token: str
    role: str  # "admin" or "viewer"


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    kind: str
    queue: str
    klass: str
    alarm_bit: int | None = None
    passthrough_type: int | None = None
    skills: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Config:
    source: str
    gateway: dict[str, Any]
    store: dict[str, Any]
    terminals: dict[str, Any]
    sessions: dict[str, Any]
    tenants: dict[str, str]
    queues: tuple[QueueSpec, ...]
    agents: tuple[AgentSpec, ...]
    subscribers: tuple[SubscriberSpec, ...]
    admins: tuple[AdminSpec, ...]
    triggers: tuple[TriggerSpec, ...]

    def address(self, key: str) -> Address | None:
        """``[gateway] key`` as an address, or None when disabled ("")."""
        value = self.gateway[key]
        return parse_address(self.source, f"gateway.{key}", value) if value else None

    def queue(self, name: str) -> QueueSpec | None:
        for q in self.queues:
            if q.name == name:
                return q
        return None

    def tenant_of(self, phone: str) -> str:
        best = ""
        for prefix in self.tenants:
            if phone.startswith(prefix) and len(prefix) > len(best):
                best = prefix
        return self.tenants[best] if best else self.terminals["default_tenant"]


# ---------------------------------------------------------------------------
# Reload: what a running gateway can take from a new file, and what waits for a restart.

# Keys a reload cannot apply (None: the whole section). The listeners and the store are built once at
# start; terminals.rcvbuf sizes the sockets of listeners made at start (TCP and QUIC). Everything else
# is taken from the new file: queues, agents, triggers, subscribers, admins, [sessions], [tenants] and
# the rest of [terminals] (read per connection or per frame, so they apply to connections made after).
RESTART_ONLY: dict[str, tuple[str, ...] | None] = {"gateway": None, "store": None, "terminals": ("rcvbuf",)}


def restart_needed(running: Config, new: Config) -> list[str]:
    """The restart-only keys (``"section.key"``) whose value in ``new`` differs from ``running``'s."""
    out = []
    for section, keys in RESTART_ONLY.items():
        have, want = getattr(running, section), getattr(new, section)
        for key in keys or sorted(have.keys() | want.keys()):
            if have.get(key) != want.get(key):
                out.append(f"{section}.{key}")
    return sorted(out)


def keep_running(running: Config, new: Config) -> Config:
    """``new`` with ``running``'s restart-only values: the configuration a gateway runs after a reload.

    So ``gw.cfg`` keeps describing what is running (the listeners' addresses, the store's pool and queue
    bound), and a later reload still finds, and reports, a difference it could not apply.
    """
    out = copy.copy(new)
    for section, keys in RESTART_ONLY.items():
        have = getattr(running, section)
        kept = dict(have) if keys is None else {**getattr(new, section), **{k: have[k] for k in keys}}
        setattr(out, section, kept)
    return out


# ---------------------------------------------------------------------------
# Loading


def load(path: str | None = None, env: dict[str, str] | None = None) -> Config:
    """Load the configuration; raise :class:`ConfigError` on any problem."""
    env = dict(os.environ if env is None else env)
    raw: dict[str, Any] = {}
    source = path or "<defaults>"
    if path:
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(path, "-", "file not found") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(path, "-", f"not valid TOML: {e}") from None
        except OSError as e:
            raise ConfigError(path, "-", f"cannot read: {e.strerror}") from None
    return build(raw, source, env)


def build(raw: dict[str, Any], source: str, env: dict[str, str] | None = None) -> Config:
    env = env or {}
    known = set(SCALARS) | {"queues", "agents", "subscribers", "admins", "triggers"}
    for key in raw:
        if key not in known:
            raise ConfigError(source, key, f"unknown section (known: {', '.join(sorted(known))})")

    sections: dict[str, dict[str, Any]] = {}
    for name, defaults in SCALARS.items():
        given = raw.get(name, {})
        if not isinstance(given, dict):
            raise ConfigError(source, name, "must be a table")
        if name == "tenants":
            sections[name] = _tenants(source, given)
            continue
        merged = dict(defaults)
        for key, value in given.items():
            if key not in defaults:
                raise ConfigError(source, f"{name}.{key}", f"unknown key (known: {', '.join(defaults)})")
            merged[key] = _typed(source, f"{name}.{key}", defaults[key], value)
        sections[name] = merged

    lists: dict[str, list[Any]] = {}
    for name in ("queues", "agents", "subscribers", "admins", "triggers"):
        value = raw.get(name, [])
        if not isinstance(value, list):
            raise ConfigError(source, name, "must be an array of tables ([[" + name + "]])")
        lists[name] = value

    # environment overrides; ``origin`` remembers which variable set what, so that an error
    # found later names the variable, not the file
    origin: dict[str, str] = {}
    for var, text in sorted(env.items()):
        if not var.startswith("TELACD_"):
            continue
        rest = var[len("TELACD_") :].lower()
        if rest in lists:
            try:
                value = json.loads(text)
            except ValueError as e:
                raise ConfigError(f"${var}", rest, f"not a JSON array: {e}") from None
            if not isinstance(value, list):
                raise ConfigError(f"${var}", rest, "must be a JSON array")
            lists[rest] = value
            origin[rest] = f"${var}"
            continue
        if rest == "tenants":
            try:
                value = json.loads(text)
            except ValueError as e:
                raise ConfigError(f"${var}", rest, f"not a JSON object: {e}") from None
            if not isinstance(value, dict):
                raise ConfigError(
                    f"${var}", rest, 'must be a JSON object of prefix: tenant, e.g. {"0138": "acme"}'
                )
            sections["tenants"] = _tenants(f"${var}", value)
            continue
        for name, defaults in SCALARS.items():
            prefix = name + "_"
            if not rest.startswith(prefix) or name == "tenants":
                continue
            key = rest[len(prefix) :]
            if key not in defaults:
                # a misspelt override must not be ignored in silence
                raise ConfigError(f"${var}", f"{name}.{key}", f"unknown key (known: {', '.join(defaults)})")
            sections[name][key] = _typed(f"${var}", f"{name}.{key}", defaults[key], _env_value(text))
            origin[f"{name}.{key}"] = f"${var}"
            break
        # other TELACD_* variables (TELACD_REQUIRE_SERVICES, TELACD_PURE_PYTHON...) are not config

    _check_scalars(source, sections, origin)
    src = {name: origin.get(name, source) for name in lists}
    queues = _merge_by(DEFAULT_QUEUES, lists["queues"], "name", src["queues"], "queues")
    triggers = _merge_by(DEFAULT_TRIGGERS, lists["triggers"], "kind", src["triggers"], "triggers")
    cfg = Config(
        source=source,
        gateway=sections["gateway"],
        store=sections["store"],
        terminals=sections["terminals"],
        sessions=sections["sessions"],
        tenants=sections["tenants"],
        queues=tuple(_queue(src["queues"], i, q) for i, q in enumerate(queues)),
        agents=tuple(_agent(src["agents"], i, a) for i, a in enumerate(lists["agents"])),
        subscribers=tuple(_subscriber(src["subscribers"], i, s) for i, s in enumerate(lists["subscribers"])),
        admins=tuple(_admin(src["admins"], i, a) for i, a in enumerate(lists["admins"])),
        triggers=tuple(_trigger(src["triggers"], i, t) for i, t in enumerate(triggers)),
    )
    _check_references(cfg, src)
    return cfg


def _env_value(text: str) -> Any:
    # scalars from the environment are strings; _typed converts by the default's type
    return text


def _typed(source: str, key: str, default: Any, value: Any) -> Any:
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(source, key, f"must be a boolean, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, str):
            try:
                return int(value, 0)
            except ValueError:
                raise ConfigError(source, key, f"must be an integer, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, key, f"must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(source, key, f"must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(source, key, f"must be a number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(source, key, f"must be a string, got {value!r}")
        return value
    raise ConfigError(source, key, "cannot be set here")


_ADDR = re.compile(r"^(?:\[(?P<v6>[0-9a-fA-F:]+)\]|(?P<host>[^:\s]+)):(?P<port>\d{1,5})$")
_ZONE = re.compile(r"^[+-](?:[01]\d|2[0-3]):[0-5]\d$")


def parse_address(source: str, key: str, value: str) -> Address:
    m = _ADDR.match(value)
    if not m:
        raise ConfigError(source, key, f"must be HOST:PORT, got {value!r}")
    port = int(m["port"])
    if not 0 <= port <= 65535:
        raise ConfigError(source, key, f"port out of range in {value!r}")
    return Address(m["v6"] or m["host"], port)


def _check_scalars(source: str, s: dict[str, dict[str, Any]], origin: dict[str, str] | None = None) -> None:
    def at(key: str) -> str:  # where the value of ``key`` came from: the file, or a $TELACD_ variable
        return (origin or {}).get(key, source)

    for key in ("tcp", "quic", "http", "agent_tcp", "feed_tcp"):
        if s["gateway"][key]:
            parse_address(at(f"gateway.{key}"), f"gateway.{key}", s["gateway"][key])
    if not s["gateway"]["http"]:
        raise ConfigError(
            at("gateway.http"), "gateway.http", "the HTTP address is required (admin API, agents, feed)"
        )
    if s["gateway"]["quic"] and not (s["gateway"]["quic_cert"] and s["gateway"]["quic_key"]):
        raise ConfigError(
            at("gateway.quic"),
            "gateway.quic",
            "QUIC needs gateway.quic_cert and gateway.quic_key (telacd cert DIR)",
        )
    if s["gateway"]["workers"] < 1:
        raise ConfigError(at("gateway.workers"), "gateway.workers", "must be at least 1")
    url = s["store"]["url"]
    if not (url.startswith("sqlite://") or url.startswith(("postgresql://", "postgres://"))):
        raise ConfigError(
            at("store.url"), "store.url", f"must start with sqlite:// or postgresql://, got {url!r}"
        )
    if s["store"]["sync"] not in ("normal", "full"):
        raise ConfigError(at("store.sync"), "store.sync", "must be 'normal' or 'full'")
    for key in ("location_batch", "location_flush_ms", "location_queue_max", "pool_size"):
        if s["store"][key] < 1:
            raise ConfigError(at(f"store.{key}"), f"store.{key}", "must be at least 1")
    if s["store"]["commit_timeout_s"] <= 0:
        raise ConfigError(at("store.commit_timeout_s"), "store.commit_timeout_s", "must be positive")
    t = s["terminals"]
    if t["auth"] not in ("open", "registered", "fixed"):
        raise ConfigError(
            at("terminals.auth"), "terminals.auth", f"must be open, registered or fixed, got {t['auth']!r}"
        )
    if t["auth"] == "fixed" and not t["fixed_code"]:
        raise ConfigError(
            at("terminals.fixed_code"), "terminals.fixed_code", "auth = 'fixed' needs a non-empty fixed_code"
        )
    if not _ZONE.match(t["device_zone"]):
        raise ConfigError(
            at("terminals.device_zone"),
            "terminals.device_zone",
            f"must look like +08:00, got {t['device_zone']!r}",
        )
    for key in ("max_buffer", "max_malformed", "max_frames_per_s", "send_buffer_high"):
        if t[key] < 1:
            raise ConfigError(at(f"terminals.{key}"), f"terminals.{key}", "must be at least 1")
    if t["max_buffer"] < 64:
        raise ConfigError(at("terminals.max_buffer"), "terminals.max_buffer", "must be at least 64 bytes")
    if t["heartbeat_timeout_s"] <= 0:
        raise ConfigError(
            at("terminals.heartbeat_timeout_s"), "terminals.heartbeat_timeout_s", "must be positive"
        )
    if t["rcvbuf"] < 0:
        raise ConfigError(at("terminals.rcvbuf"), "terminals.rcvbuf", "must not be negative")
    if t["overload_lag_ms"] < 1:
        raise ConfigError(at("terminals.overload_lag_ms"), "terminals.overload_lag_ms", "must be at least 1")
    if t["overload_commit_ms"] < 0:
        raise ConfigError(
            at("terminals.overload_commit_ms"),
            "terminals.overload_commit_ms",
            "must not be negative (0: off)",
        )
    if t["overload_keep_s"] < 0:
        raise ConfigError(
            at("terminals.overload_keep_s"), "terminals.overload_keep_s", "must not be negative"
        )
    for key, value in s["sessions"].items():
        if isinstance(value, int | float) and value < 0:
            raise ConfigError(at(f"sessions.{key}"), f"sessions.{key}", "must not be negative")


def _tenants(source: str, given: dict[str, Any]) -> dict[str, str]:
    out = {}
    for prefix, tenant in given.items():
        if not re.fullmatch(r"\d+", prefix):
            raise ConfigError(source, f"tenants.{prefix}", "keys are phone-number prefixes (digits)")
        if not isinstance(tenant, str) or not tenant:
            raise ConfigError(source, f"tenants.{prefix}", "must be a tenant name")
        out[prefix] = tenant
    return out


def _merge_by(defaults: list[dict], given: list[Any], key: str, source: str, name: str) -> list[dict]:
    merged = {d[key]: copy.deepcopy(d) for d in defaults}
    for i, entry in enumerate(given):
        if not isinstance(entry, dict):
            raise ConfigError(source, f"{name}[{i}]", "must be a table")
        if key not in entry:
            raise ConfigError(source, f"{name}[{i}]", f"missing '{key}'")
        merged[entry[key]] = entry
    return list(merged.values())


def _get(source: str, where: str, d: dict, key: str, kind: type | tuple, default: Any = ...) -> Any:
    if key not in d:
        if default is ...:
            raise ConfigError(source, f"{where}.{key}", "is required")
        return default
    value = d[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and kind in (int, float):
        raise ConfigError(source, f"{where}.{key}", f"must be a {kind.__name__}, got {value!r}")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ConfigError(source, f"{where}.{key}", f"must be a {names}, got {value!r}")
    return value


def _unknown(source: str, where: str, d: dict, allowed: set[str]) -> None:
    for key in d:
        if key not in allowed:
            raise ConfigError(source, f"{where}.{key}", f"unknown key (known: {', '.join(sorted(allowed))})")


def _skills(source: str, where: str, value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ConfigError(source, where, "must be a table of skill = level, e.g. { emergency = 8 }")
    out = {}
    for name, level in value.items():
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 10:
            raise ConfigError(
                source, f"{where}.{name}", f"skill level must be an integer 1-10, got {level!r}"
            )
        out[str(name)] = level
    return out


def _queue(source: str, i: int, q: dict) -> QueueSpec:
    where = f"queues[{i}]"
    allowed = {
        "name", "tenant", "strategy", "skills", "order", "offer_timeout_s", "wrapup_s", "max_no_answer",
        "sticky_s", "preempt_wrapup", "aging_per_s", "sl_threshold_s", "classes", "escalation", "agents",
        "progressive_step_s",
    }  # fmt: skip
    _unknown(source, where, q, allowed)
    name = _get(source, where, q, "name", str)
    where = f"queues[{name}]"
    strategy = _get(source, where, q, "strategy", str, "longest-idle")
    if strategy not in STRATEGIES:
        raise ConfigError(
            source, f"{where}.strategy", f"unknown strategy {strategy!r} (known: {', '.join(STRATEGIES)})"
        )
    order = _get(source, where, q, "order", str, "priority")
    if order not in ("priority", "edf"):
        raise ConfigError(source, f"{where}.order", "must be 'priority' or 'edf'")
    classes_raw = _get(
        source, where, q, "classes", list, [{"name": "normal", "priority": 10, "target_s": 20.0}]
    )
    if not classes_raw:
        raise ConfigError(source, f"{where}.classes", "needs at least one class")
    classes = []
    for j, c in enumerate(classes_raw):
        cw = f"{where}.classes[{j}]"
        if not isinstance(c, dict):
            raise ConfigError(source, cw, "must be a table")
        _unknown(source, cw, c, {"name", "priority", "target_s"})
        classes.append(
            ClassSpec(
                _get(source, cw, c, "name", str),
                _get(source, cw, c, "priority", int),
                _positive(source, cw, "target_s", _get(source, cw, c, "target_s", float, 20.0)),
            )
        )
    if len({c.name for c in classes}) != len(classes):
        raise ConfigError(source, f"{where}.classes", "class names must be unique")
    steps = []
    for j, st in enumerate(_get(source, where, q, "escalation", list, [])):
        sw = f"{where}.escalation[{j}]"
        if not isinstance(st, dict):
            raise ConfigError(source, sw, "must be a table")
        _unknown(source, sw, st, {"after_s", "skills", "agents", "queue", "shared"})
        agents = _get(source, sw, st, "agents", list, [])
        if not all(isinstance(a, str) for a in agents):
            raise ConfigError(source, f"{sw}.agents", "must be a list of agent ids")
        steps.append(
            StepSpec(
                after_s=_positive(source, sw, "after_s", _get(source, sw, st, "after_s", float)),
                skills=_skills(source, f"{sw}.skills", st["skills"]) if "skills" in st else None,
                agents=tuple(agents),
                queue=_get(source, sw, st, "queue", str, ""),
                shared=_get(source, sw, st, "shared", bool, False),
            )
        )
    if any(b.after_s <= a.after_s for a, b in itertools.pairwise(steps)):
        raise ConfigError(source, f"{where}.escalation", "steps must have increasing after_s")
    agents = _get(source, where, q, "agents", list, [])
    if not all(isinstance(a, str) for a in agents):
        raise ConfigError(source, f"{where}.agents", "must be a list of agent ids")
    return QueueSpec(
        name=name,
        tenant=_get(source, where, q, "tenant", str, "*"),
        strategy=strategy,
        skills=_skills(source, f"{where}.skills", q.get("skills", {})),
        order=order,
        offer_timeout_s=_positive(
            source, where, "offer_timeout_s", _get(source, where, q, "offer_timeout_s", float, 15.0)
        ),
        wrapup_s=_nonneg(source, where, "wrapup_s", _get(source, where, q, "wrapup_s", float, 10.0)),
        max_no_answer=_get(source, where, q, "max_no_answer", int, 3),
        sticky_s=_nonneg(source, where, "sticky_s", _get(source, where, q, "sticky_s", float, 0.0)),
        preempt_wrapup=_get(source, where, q, "preempt_wrapup", bool, False),
        aging_per_s=_nonneg(source, where, "aging_per_s", _get(source, where, q, "aging_per_s", float, 0.0)),
        sl_threshold_s=_positive(
            source, where, "sl_threshold_s", _get(source, where, q, "sl_threshold_s", float, 20.0)
        ),
        classes=tuple(classes),
        escalation=tuple(steps),
        agents=tuple(agents),
        progressive_step_s=_positive(
            source, where, "progressive_step_s", _get(source, where, q, "progressive_step_s", float, 5.0)
        ),
    )


def _positive(source: str, where: str, key: str, value: float) -> float:
    if value <= 0:
        raise ConfigError(source, f"{where}.{key}", f"must be positive, got {value!r}")
    return value


def _nonneg(source: str, where: str, key: str, value: float) -> float:
    if value < 0:
        raise ConfigError(source, f"{where}.{key}", f"must not be negative, got {value!r}")
    return value


def _agent(source: str, i: int, a: Any) -> AgentSpec:
    where = f"agents[{i}]"
    if not isinstance(a, dict):
        raise ConfigError(source, where, "must be a table")
    _unknown(source, where, a, {"id", "token", "tenants", "skills", "capacity", "name", "phone", "wrapup_s"})
    aid = _get(source, where, a, "id", str)
    where = f"agents[{aid}]"
    token = _get(source, where, a, "token", str)
    if not token:
        raise ConfigError(source, f"{where}.token", "must not be empty")
    tenants = _get(source, where, a, "tenants", list, ["*"])
    if not tenants or not all(isinstance(t, str) for t in tenants):
        raise ConfigError(source, f"{where}.tenants", "must be a non-empty list of tenant names ('*' = all)")
    capacity = _get(source, where, a, "capacity", dict, {"voice": 1, "data": 1, "chat": 3})
    for ch, n in capacity.items():
        if ch not in CHANNELS:
            raise ConfigError(
                source, f"{where}.capacity.{ch}", f"unknown channel (known: {', '.join(CHANNELS)})"
            )
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(source, f"{where}.capacity.{ch}", f"must be a non-negative integer, got {n!r}")
    wrapup = a.get("wrapup_s")
    if wrapup is not None:
        wrapup = _nonneg(source, where, "wrapup_s", _get(source, where, a, "wrapup_s", float))
    return AgentSpec(
        id=aid,
        token=token,
        tenants=tuple(tenants),
        skills=_skills(source, f"{where}.skills", a.get("skills", {})),
        capacity=dict(capacity),
        name=_get(source, where, a, "name", str, aid),
        phone=_get(source, where, a, "phone", str, ""),
        wrapup_s=wrapup,
    )


FEED_EVENTS = (
    "created",
    "updated",
    "queued",
    "offered",
    "assigned",
    "command",
    "completed",
    "abandoned",
    "escalated",
)


def check_filter(source: str, where: str, f: Any) -> dict[str, Any]:
    """Validate a feed filter: {tenants|tenant, queues|queue, events|kinds, session_kinds}."""
    if not isinstance(f, dict):
        raise ConfigError(source, where, "filter must be a table")
    out: dict[str, Any] = {}
    aliases = {"tenant": "tenants", "queue": "queues", "kinds": "events", "event": "events"}
    for key, value in f.items():
        norm = aliases.get(key, key)
        if norm not in ("tenants", "queues", "events", "session_kinds"):
            raise ConfigError(
                source, f"{where}.{key}", "unknown filter key (tenants, queues, events, session_kinds)"
            )
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(source, f"{where}.{key}", "must be a string or a list of strings")
        if norm == "events":
            bad = [v for v in value if v not in FEED_EVENTS]
            if bad:
                raise ConfigError(
                    source, f"{where}.{key}", f"unknown event {bad[0]!r} (known: {', '.join(FEED_EVENTS)})"
                )
        out[norm] = tuple(value)
    return out


def _subscriber(source: str, i: int, s: Any) -> SubscriberSpec:
    where = f"subscribers[{i}]"
    if not isinstance(s, dict):
        raise ConfigError(source, where, "must be a table")
    _unknown(source, where, s, {"id", "token", "filter"})
    sid = _get(source, where, s, "id", str)
    where = f"subscribers[{sid}]"
    return SubscriberSpec(
        id=sid,
        token=_get(source, where, s, "token", str),
        filter=check_filter(source, f"{where}.filter", s.get("filter", {})),
    )


def _admin(source: str, i: int, a: Any) -> AdminSpec:
    where = f"admins[{i}]"
    if not isinstance(a, dict):
        raise ConfigError(source, where, "must be a table")
    _unknown(source, where, a, {"id", "token", "role"})
    aid = _get(source, where, a, "id", str)
    where = f"admins[{aid}]"
    role = _get(source, where, a, "role", str, "admin")
    if role not in ("admin", "viewer"):
        raise ConfigError(source, f"{where}.role", f"must be 'admin' or 'viewer', got {role!r}")
    token = _get(source, where, a, "token", str)
    if not token:
        raise ConfigError(source, f"{where}.token", "must not be empty")
    return AdminSpec(aid, token, role)


def _trigger(source: str, i: int, t: dict) -> TriggerSpec:
    where = f"triggers[{t.get('kind', i)}]"
    _unknown(source, where, t, {"kind", "alarm_bit", "passthrough_type", "queue", "class", "skills"})
    bit = t.get("alarm_bit")
    ptype = t.get("passthrough_type")
    if (bit is None) == (ptype is None):
        raise ConfigError(source, where, "needs exactly one of alarm_bit or passthrough_type")
    if bit is not None and (isinstance(bit, bool) or not isinstance(bit, int) or not 0 <= bit <= 31):
        raise ConfigError(source, f"{where}.alarm_bit", f"must be an integer 0-31, got {bit!r}")
    if ptype is not None and (isinstance(ptype, bool) or not isinstance(ptype, int) or not 0 <= ptype <= 255):
        raise ConfigError(source, f"{where}.passthrough_type", f"must be an integer 0-255, got {ptype!r}")
    return TriggerSpec(
        kind=_get(source, where, t, "kind", str),
        queue=_get(source, where, t, "queue", str),
        klass=_get(source, where, t, "class", str, ""),
        alarm_bit=bit,
        passthrough_type=ptype,
        skills=_skills(source, f"{where}.skills", t.get("skills", {})),
    )


def _check_references(cfg: Config, origin: dict[str, str] | None = None) -> None:
    """Cross-references; an error names where the referring entry came from (the file or a $TELACD_ list)."""
    origin = origin or {}

    def at(name: str) -> str:
        return origin.get(name, cfg.source)

    names = [q.name for q in cfg.queues]
    agent_ids = [a.id for a in cfg.agents]
    for kind, ids in (("queues", names), ("agents", agent_ids), ("subscribers", [s.id for s in cfg.subscribers]),
                      ("admins", [a.id for a in cfg.admins])):  # fmt: skip
        dup = {x for x in ids if ids.count(x) > 1}
        if dup:
            raise ConfigError(at(kind), kind, f"duplicate id {sorted(dup)[0]!r}")
    tokens = [a.token for a in cfg.admins]
    if len(set(tokens)) != len(tokens):
        raise ConfigError(at("admins"), "admins", "two admins share a token")
    for q in cfg.queues:
        for j, st in enumerate(q.escalation):
            if st.queue and st.queue not in names:
                raise ConfigError(
                    at("queues"), f"queues[{q.name}].escalation[{j}].queue", f"no queue named {st.queue!r}"
                )
            for a in st.agents:
                if a not in agent_ids:
                    raise ConfigError(
                        at("queues"), f"queues[{q.name}].escalation[{j}].agents", f"no agent named {a!r}"
                    )
        for a in q.agents:
            if a not in agent_ids:
                raise ConfigError(at("queues"), f"queues[{q.name}].agents", f"no agent named {a!r}")
    bits: dict[int, str] = {}
    for t in cfg.triggers:
        q = cfg.queue(t.queue)
        if q is None:
            raise ConfigError(at("triggers"), f"triggers[{t.kind}].queue", f"no queue named {t.queue!r}")
        if t.klass and t.klass not in {c.name for c in q.classes}:
            raise ConfigError(
                at("triggers"), f"triggers[{t.kind}].class", f"queue {q.name!r} has no class {t.klass!r}"
            )
        if t.alarm_bit is not None:
            if t.alarm_bit in bits:
                raise ConfigError(
                    at("triggers"),
                    f"triggers[{t.kind}].alarm_bit",
                    f"bit {t.alarm_bit} is already {bits[t.alarm_bit]!r}",
                )
            bits[t.alarm_bit] = t.kind
    su = cfg.sessions["unresolved_queue"]
    if su and su not in names:
        raise ConfigError(
            at("sessions.unresolved_queue"), "sessions.unresolved_queue", f"no queue named {su!r}"
        )
