"""Injected faults: what a flaky platform does to a request, drawn deterministically.

Each fault is a fraction of the API requests. For every API request (a POST to a call's path)
``FaultPlan.draw`` turns a keyed hash of (seed, path and body, attempt) into one uniform number
and walks the cumulative fractions in the order of ``FAULT_KINDS``. The attempt is how many
times the plan has seen that path and body (1 for the first request, 2 for its first retry...).
So the fate of each attempt of each row depends on the seed, the row and the attempt number
only: the same seed gives the same faults whatever the arrival order, the concurrency or the
timing. ``latency_ms`` applies to every request and, when it is a range, is drawn (in arrival
order) from a generator of its own: timing only, it never changes which request fails.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass, fields
from typing import Any, cast

#: Fault names in the order the cumulative walk takes them.
FAULT_KINDS = (
    "http_503",
    "http_500",
    "http_429",
    "errcode_10000",
    "reset",
    "truncated",
    "non_json",
    "stall",
    "errcode_20004",
    "blacklisted",
    "late_apply",
)

#: Short names accepted by ``--fault NAME=FRACTION`` besides the field names.
ALIASES = {
    "503": "http_503",
    "500": "http_500",
    "429": "http_429",
    "10000": "errcode_10000",
    "20004": "errcode_20004",
    "non-json": "non_json",
    "late-apply": "late_apply",
}


def parse_latency(
    value: float | int | str | tuple[float, float] | list[float],
) -> tuple[float, float]:
    """``20`` -> (20, 20); ``"10-30"`` -> (10, 30); a pair stays a pair."""
    if isinstance(value, bool):
        raise ValueError("latency_ms must be a number of milliseconds or a range like 10-30")
    if isinstance(value, int | float):
        lo = hi = float(value)
    elif isinstance(value, str):
        text = value.strip()
        lo_s, sep, hi_s = text.partition("-")
        try:
            lo = float(lo_s)
            hi = float(hi_s) if sep else lo
        except ValueError:
            raise ValueError(
                f"latency_ms {value!r} is not a number of milliseconds or a range like 10-30"
            ) from None
    else:
        lo, hi = (float(v) for v in value)
    if lo < 0 or hi < lo:
        raise ValueError(f"latency_ms range {lo:g}-{hi:g} must be 0 <= low <= high")
    return lo, hi


@dataclass(frozen=True)
class Faults:
    """Fault fractions (0..1, summing to at most 1), latency and their parameters."""

    seed: int = 0
    #: added to every request: fixed ``20`` or a range ``"10-30"`` (stored as a pair)
    latency_ms: float | str | tuple[float, float] = (0.0, 0.0)
    http_503: float = 0.0
    http_500: float = 0.0
    #: answered with ``Retry-After: <retry_after>``
    http_429: float = 0.0
    #: HTTP 200 ``{"errcode": 10000}``
    errcode_10000: float = 0.0
    #: processed and stored, then the connection is closed with no response
    reset: float = 0.0
    #: processed and stored, then a response shorter than its Content-Length, then close
    truncated: float = 0.0
    #: HTTP 200 with an HTML body
    non_json: float = 0.0
    #: nothing stored; answered HTTP 503 after ``stall_s`` seconds
    stall: float = 0.0
    #: HTTP 200 ``{"errcode": 20004}`` (a signature refused now and then: clock jitter, a
    #: proxy); nothing stored
    errcode_20004: float = 0.0
    #: HTTP 200 ``{"errcode": 20003}`` whose errmsg names the customer, as a platform's
    #: blacklist does (``customer 13812345678 / "a@b.cn" is blacklisted``); nothing stored
    blacklisted: float = 0.0
    #: held ``late_apply_s`` seconds, past the client's timeout (the client sees no answer),
    #: then applied (stored) all the same: an overloaded backend finishing a request the
    #: client gave up on; answered then if the connection is still open
    late_apply: float = 0.0
    retry_after: str = "1"
    stall_s: float = 60.0
    late_apply_s: float = 30.0
    #: an outage: after this many API requests (0: never), every request is answered HTTP
    #: 503, nothing stored, until the faults are set again (``Sandbox.set_faults``)
    down_after: int = 0
    #: rows vanish: after this many rows stored (0: never), every later row is checked and
    #: answered as usual (errcode 0) but not stored, until the faults are set again
    drop_after_ok: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "latency_ms", parse_latency(self.latency_ms))
        object.__setattr__(self, "retry_after", str(self.retry_after))
        total = 0.0
        for name in FAULT_KINDS:
            frac = getattr(self, name)
            if isinstance(frac, bool) or not isinstance(frac, int | float) or not 0 <= frac <= 1:
                raise ValueError(f"fault {name}={frac!r} must be a fraction between 0 and 1")
            total += frac
        if total > 1 + 1e-9:
            raise ValueError(f"fault fractions sum to {total:g}, more than 1")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"fault seed {self.seed!r} must be an integer")
        for name in ("stall_s", "late_apply_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} {value!r} must be a number of seconds >= 0")
        for name, unit in (("down_after", "requests"), ("drop_after_ok", "rows")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} {value!r} must be a number of {unit} >= 0")
        if not self.retry_after.strip():
            raise ValueError("retry_after must not be empty")

    @property
    def latency_range(self) -> tuple[float, float]:
        """``latency_ms`` as the (low, high) pair it is normalized to."""
        return cast(tuple[float, float], self.latency_ms)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (``Faults.from_dict`` reads it back)."""
        out = asdict(self)
        lo, hi = self.latency_range
        out["latency_ms"] = f"{lo:g}-{hi:g}" if lo != hi else lo
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Faults:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(unknown)}")
        return cls(**data)

    def to_args(self) -> list[str]:
        """The sandbox CLI options that configure these faults."""
        out = ["--fault-seed", str(self.seed), "--retry-after", self.retry_after]
        out += ["--stall-s", f"{self.stall_s:g}", "--late-apply-s", f"{self.late_apply_s:g}"]
        if self.down_after:
            out += ["--down-after", str(self.down_after)]
        if self.drop_after_ok:
            out += ["--drop-after-ok", str(self.drop_after_ok)]
        lo, hi = self.latency_range
        if hi > 0:
            out += ["--latency-ms", f"{lo:g}-{hi:g}"]
        for name in FAULT_KINDS:
            frac = getattr(self, name)
            if frac:
                out += ["--fault", f"{name}={frac!r}"]
        return out


def parse_fault_specs(specs: list[str]) -> dict[str, float]:
    """``["503=0.05", "reset=0.01"]`` -> ``{"http_503": 0.05, "reset": 0.01}``."""
    out: dict[str, float] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        name = ALIASES.get(name.strip(), name.strip())
        if not sep or name not in FAULT_KINDS:
            raise ValueError(
                f"bad fault {spec!r}: use NAME=FRACTION with NAME one of "
                f"{', '.join([*ALIASES, *FAULT_KINDS])}"
            )
        try:
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"bad fault {spec!r}: {value!r} is not a number") from None
    return out


class FaultPlan:
    """The deterministic draw: one ``draw(path, body)`` per API request.

    Keeps a count per request digest (path and body) while any fault is configured, so that
    the draw knows which attempt of that request it is looking at; ``set_faults`` on the server
    makes a new plan, which starts every count afresh.
    """

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._key = hashlib.blake2b(str(faults.seed).encode(), digest_size=32).digest()
        self._latency_rng = random.Random(f"latency:{faults.seed}")
        cumulative = 0.0
        self._walk: list[tuple[float, str]] = []
        for name in FAULT_KINDS:
            frac = getattr(faults, name)
            if frac:
                cumulative += frac
                self._walk.append((cumulative, name))
        self._seen: dict[bytes, int] = {}
        self._latency = faults.latency_range
        self._requests = 0

    def draw(self, path: str, body: bytes) -> str | None:
        """The fault for this attempt of the request ``path`` + ``body``, or None. Past
        ``down_after`` requests, ``http_503`` for every one."""
        self._requests += 1
        if self.faults.down_after and self._requests > self.faults.down_after:
            return "http_503"
        if not self._walk:
            return None
        h = hashlib.blake2b(path.encode(), digest_size=16)
        h.update(b"\0")
        h.update(body)
        digest = h.digest()
        attempt = self._seen.get(digest, 0) + 1
        self._seen[digest] = attempt
        draw = hashlib.blake2b(digest, digest_size=8, key=self._key)
        draw.update(attempt.to_bytes(8, "little"))
        u = int.from_bytes(draw.digest(), "little") / 2.0**64
        for bound, name in self._walk:
            if u < bound:
                return name
        return None

    def latency_s(self) -> float:
        """Seconds to delay the next request by (0 without latency)."""
        lo, hi = self._latency
        if hi <= 0:
            return 0.0
        ms = lo if lo == hi else self._latency_rng.uniform(lo, hi)
        return ms / 1000.0
