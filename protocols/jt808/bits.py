"""Alarm and status bits by name, and per-device-model profiles.

The 0x0200 alarm word is where a call centre's work starts: bit 0 is the SOS
("one-key") button, bits 29 and 30 the collision and rollover warnings. The
standard names come from JT/T 808-2013 table 24 and the 2019 revision, which
gives meaning to bits 15-17 that 2013 reserved. Vendors reuse exactly those bits
and sometimes 29-30 for their own purposes (jt808.md §4: the G10LS profile makes
bit 15 low battery, 16 vibration, 17 removal), so the mapping is per device
model: a :class:`DeviceProfile` overrides single bits, and code that acts on
alarms asks the profile for a mask by name (``profile.mask("collision")``)
rather than hard-coding bit numbers.

A profile also carries the model's other habits: its clock's time zone (GMT+8 by
the standard, often UTC abroad) and which standard violations to tolerate
(bad checksum, wrong body length, an unescaped trailing 0x7D, a wrong bit 14).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# JT/T 808-2013 table 24 (alarm flags). None = reserved in that revision.
ALARM_BITS_2013: tuple[str | None, ...] = (
    "emergency",  # 0: SOS / one-key alarm, cleared after the platform's answer
    "overspeed",  # 1
    "fatigue_driving",  # 2
    "danger_warning",  # 3
    "gnss_fault",  # 4
    "gnss_antenna_open",  # 5
    "gnss_antenna_short",  # 6
    "power_low",  # 7: main power under-voltage
    "power_off",  # 8: main power down
    "display_fault",  # 9
    "tts_fault",  # 10
    "camera_fault",  # 11
    "ic_card_fault",  # 12: road transport certificate IC card module
    "overspeed_warning",  # 13
    "fatigue_warning",  # 14
    None,  # 15: reserved in 2013
    None,  # 16: reserved in 2013
    None,  # 17: reserved in 2013
    "driving_time_exceeded",  # 18: accumulated driving time today
    "overtime_parking",  # 19
    "area_in_out",  # 20
    "route_in_out",  # 21
    "route_time",  # 22: road-section driving time too short/long
    "route_deviation",  # 23
    "vss_fault",  # 24
    "fuel_abnormal",  # 25
    "stolen",  # 26
    "illegal_ignition",  # 27
    "illegal_displacement",  # 28
    "collision",  # 29: collision warning (碰撞预警)
    "rollover",  # 30: rollover warning (侧翻预警)
    "illegal_door_open",  # 31
)

# JT/T 808-2019 names the three bits 2013 reserved.
ALARM_BITS_2019: tuple[str | None, ...] = (
    *ALARM_BITS_2013[:15],
    "violation_driving",  # 15
    "tire_pressure",  # 16
    "right_turn_blind_zone",  # 17
    *ALARM_BITS_2013[18:],
)

# Bits the platform's 0x8203 mask may confirm; the same set is cleared by the
# terminal after an answer (jt808.md §4, [YZ T8203]).
ALARM_CONFIRMABLE = (1 << 0) | (1 << 3) | (1 << 20) | (1 << 21) | (1 << 22) | (1 << 27) | (1 << 28)

# JT/T 808-2013 table 25 (status); bits 8-9 are a two-bit load field.
STATUS_BITS: tuple[str | None, ...] = (
    "acc_on",  # 0
    "positioned",  # 1
    "south",  # 2
    "west",  # 3
    "out_of_service",  # 4
    "coordinates_encrypted",  # 5
    "forward_collision_warning",  # 6: 2019 (AEB); vendors use it for "armed"
    "lane_departure_warning",  # 7: 2019
    None,  # 8: load, low bit
    None,  # 9: load, high bit
    "oil_cut",  # 10
    "circuit_cut",  # 11
    "doors_locked",  # 12
    "door1_open",  # 13: front door
    "door2_open",  # 14
    "door3_open",  # 15
    "door4_open",  # 16
    "door5_open",  # 17
    "gps",  # 18
    "beidou",  # 19
    "glonass",  # 20
    "galileo",  # 21
    "moving",  # 22: 2019
)
STATUS_POSITIONED = 1 << 1
STATUS_SOUTH = 1 << 2
STATUS_WEST = 1 << 3
_LOAD_NAMES = {1: "load_half", 2: "load_reserved", 3: "load_full"}


def status_names(status: int) -> list[str]:
    """Names of the set status bits (the load field reads ``load_half``/``load_full``)."""
    names = [n for bit, n in enumerate(STATUS_BITS) if n is not None and status >> bit & 1]
    load = status >> 8 & 3
    if load:
        names.append(_LOAD_NAMES[load])
    names += [f"bit{bit}" for bit in range(len(STATUS_BITS), 32) if status >> bit & 1]
    return names


@dataclass(frozen=True)
class DeviceProfile:
    """What one device model does differently from the standard.

    ``alarm_bits`` overrides the standard names bit by bit (a name, or None to
    ignore the bit). ``zone_offset_s`` is the offset of the device clock from
    UTC. The ``lenient_*`` switches decode-and-flag instead of rejecting;
    ``force_layout`` (2013 or 2019) overrides header-layout detection for
    models whose bit 14 cannot be trusted and whose lengths are ambiguous.
    """

    name: str = "default"
    alarm_bits: Mapping[int, str | None] = field(default_factory=dict)
    zone_offset_s: int = 8 * 3600
    lenient_checksum: bool = False
    lenient_length: bool = False
    lenient_trailing_7d: bool = False
    force_layout: int | None = None

    def __post_init__(self) -> None:
        for bit in self.alarm_bits:
            if not 0 <= bit < 32:
                raise ValueError(f"alarm bit {bit} outside 0..31")
        if self.force_layout not in (None, 2013, 2019):
            raise ValueError("force_layout must be None, 2013 or 2019")
        tables = {}
        for version, base in ((2013, ALARM_BITS_2013), (2019, ALARM_BITS_2019)):
            names = list(base)
            for bit, name in self.alarm_bits.items():
                names[bit] = name
            tables[version] = tuple(names)
        # a frozen dataclass: the derived tables are set once, here
        object.__setattr__(self, "_tables", tables)

    def alarm_table(self, version: int = 2013) -> tuple[str | None, ...]:
        """The 32 alarm-bit names for frames of this header version (2011 reads as 2013)."""
        return self._tables[2019 if version == 2019 else 2013]  # type: ignore[attr-defined]

    def alarm_names(self, alarm: int, version: int = 2013) -> list[str]:
        """Names of the set alarm bits; a reserved bit that is set reads ``bitN``."""
        table = self.alarm_table(version)
        return [table[bit] or f"bit{bit}" for bit in range(32) if alarm >> bit & 1]

    def mask(self, *names: str, version: int = 2013) -> int:
        """The alarm bits carrying any of these names for this model (0 if none does)."""
        table = self.alarm_table(version)
        return sum(1 << bit for bit, n in enumerate(table) if n in names)

    def with_options(self, **changes: object) -> DeviceProfile:
        """A copy with some fields changed (``profile.with_options(zone_offset_s=0)``)."""
        values = {f: getattr(self, f) for f in self.__dataclass_fields__}
        values.update(changes)
        return DeviceProfile(**values)  # type: ignore[arg-type]


DEFAULT_PROFILE = DeviceProfile()

PROFILES: dict[str, DeviceProfile] = {
    "default": DEFAULT_PROFILE,
    # every tolerated deviation on (jt808.md §6): for captures and for `telacd decode --lenient`
    "lenient": DeviceProfile(
        name="lenient", lenient_checksum=True, lenient_length=True, lenient_trailing_7d=True
    ),
    # AIPorto G10LS vendor profile (jt808.md §4 [G10] table 18): bits 15-17 reused,
    # many standard bits reserved.
    "g10": DeviceProfile(
        name="g10",
        alarm_bits={
            15: "low_battery",
            16: "vibration",
            17: "removal",
            **{b: None for b in (3, 4, 5, 6, 9, 10, 11, 12, 13, 14)},
            **{b: None for b in range(20, 28)},
            **{b: None for b in (29, 30, 31)},
        },
    ),
    # Generic cheap trackers as Traccar maps them: 15 vibration, 16/17 tampering,
    # 29 and 30 both an accident (collision).
    "tracker": DeviceProfile(
        name="tracker",
        alarm_bits={15: "vibration", 16: "tampering", 17: "tampering", 30: "collision"},
        lenient_checksum=True,
    ),
    # Devices sold abroad usually keep their clock in UTC.
    "utc": DeviceProfile(name="utc", zone_offset_s=0),
}


def get_profile(name: str) -> DeviceProfile:
    """A built-in profile by name; KeyError lists the known names."""
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown device profile {name!r}; known: {', '.join(sorted(PROFILES))}") from None
