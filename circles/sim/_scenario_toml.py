"""Reading scenario files: TOML in, a :class:`Scenario` out, every error naming its key.

Each table is read through a :class:`_Table`, whose typed getters name the
dotted key of a bad value (``buyers.demand.low``) and which refuses keys it
was never asked for, so a typo in a scenario file is an error, not a default.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._scenario import (
    BuyerPopulation,
    Distribution,
    Formation,
    NetworkModel,
    Partition,
    Scenario,
    ScenarioError,
    StrategySpec,
    VendorGroup,
)

__all__ = ["load_scenario", "parse_scenario"]

_DISTS = ("constant", "uniform", "normal", "choice")


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario TOML file; raises :class:`ScenarioError` naming the faulty key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(
            f"cannot read {path}: {exc.strerror}", key=str(path), reason="unreadable"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"not valid TOML: {exc}", key=str(path), reason="bad-toml") from None
    return parse_scenario(data)


def parse_scenario(data: Mapping[str, Any]) -> Scenario:
    """Build a :class:`Scenario` from TOML-shaped data (nested dicts and lists)."""
    root = _Table(data, "")
    meta = root.table("scenario")
    buyers_t = root.table("buyers")
    places = tuple(buyers_t.strings("places", default=("u0000",)))
    buyers = BuyerPopulation(
        count=buyers_t.integer("count", low=1),
        places=places,
        demand=buyers_t.dist("demand", low=1),
        reservation=buyers_t.dist("reservation", low=1),
        arrival=buyers_t.choice("arrival", ("poisson", "at-once"), default="poisson"),
        per_hour=buyers_t.number("per_hour", default=60.0, low=1e-6),
    )
    groups = root.tables("vendors")
    vendors = tuple(_vendor_group(g, i, places) for i, g in enumerate(groups))
    formation_t = root.table("formation")
    formation = Formation(
        circles=formation_t.integer("circles", low=1),
        open_per_place=formation_t.integer("open_per_place", default=1, low=1),
        target=formation_t.dist("target", low=1),
        join=formation_t.choice(
            "join", ("fill-first", "fewest-members", "random"), default="fill-first"
        ),
        pledge_window_hours=formation_t.number("pledge_window_hours", low=0.01),
        negotiator=_strategy(formation_t, "negotiator"),
        opening=formation_t.number("opening", default=0.6, low=0.01, high=1.0),
        max_rounds=formation_t.integer("max_rounds", default=20, low=1, high=10_000),
        negotiation_minutes=formation_t.number("negotiation_minutes", default=60.0, low=1.0),
        think_seconds=formation_t.integer("think_seconds", default=30, low=1),
        admit=formation_t.choice("admit", ("until-quorum", "until-target"), default="until-quorum"),
    )
    network_t = root.table("network", required=False)
    latency = network_t.range_ms("latency_ms", default=(20.0, 80.0))
    partitions = []
    for p in network_t.tables("partitions", required=False):
        start = p.number("start_hours", low=0.0)
        end = p.number("end_hours", low=0.0)
        if end <= start:
            raise ScenarioError("must be later than start_hours", key=p.key("end_hours"))
        partitions.append(
            Partition(start_hours=start, end_hours=end, share=p.number("share", low=0.0, high=1.0))
        )
        p.done()
    network = NetworkModel(
        latency_ms=latency,
        loss=network_t.number("loss", default=0.0, low=0.0, high=0.99),
        partitions=tuple(partitions),
        sync_interval_seconds=network_t.number("sync_interval_seconds", default=300.0, low=1.0),
        tick_seconds=network_t.number("tick_seconds", default=60.0, low=0.1),
    )
    scenario = Scenario(
        name=meta.string("name", default="unnamed scenario"),
        horizon_hours=meta.number("horizon_hours", low=0.01),
        buyers=buyers,
        vendors=vendors,
        formation=formation,
        network=network,
        source=_jsonable(data),
    )
    for table in (meta, buyers_t, formation_t, network_t):
        table.done()
    root.done()
    return scenario


def _vendor_group(t: _Table, index: int, places: tuple[str, ...]) -> VendorGroup:
    list_price = t.integer("list_price", low=1)
    unit_cost = t.integer("unit_cost", low=1)
    raw_tiers = t.get("tiers", [])
    if not isinstance(raw_tiers, list):
        raise ScenarioError(
            "must be a list of [min_quantity, unit_price] pairs", key=t.key("tiers")
        )
    tiers: list[tuple[int, int]] = []
    for i, pair in enumerate(raw_tiers):
        key = f"{t.key('tiers')}[{i}]"
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(type(v) is int and v >= 1 for v in pair)
        ):
            raise ScenarioError("must be [min_quantity, unit_price], both integers >= 1", key=key)
        if tiers and pair[0] <= tiers[-1][0]:
            raise ScenarioError("tiers must have increasing min_quantity", key=key)
        tiers.append((pair[0], pair[1]))
    if not tiers:
        raise ScenarioError(
            "needs at least one [min_quantity, unit_price] tier", key=t.key("tiers")
        )
    floor = t.integer("floor", default=unit_cost, low=1)
    if floor > min(price for _, price in tiers):
        raise ScenarioError(
            "the floor is above a tier price: the vendor could never sell at that tier",
            key=t.key("floor"),
        )
    group_places = tuple(t.strings("places", default=places))
    unknown = sorted(set(group_places) - set(places))
    if unknown:
        raise ScenarioError(
            f"{', '.join(unknown)} is not one of buyers.places", key=t.key("places")
        )
    group = VendorGroup(
        name=t.string("name", default=f"vendors{index}"),
        count=t.integer("count", low=1),
        places=group_places,
        product=t.string("product", default="goods"),
        currency=t.string("currency", default="EUR"),
        unit_cost=unit_cost,
        list_price=list_price,
        floor=floor,
        tiers=tuple(tiers),
        capacity=t.integer("capacity", low=1),
        strategy=_strategy(t, "strategy"),
    )
    t.done()
    return group


_STRATEGIES = ("time-dependent", "tit-for-tat", "take-it-or-leave-it")


def _strategy(parent: _Table, name: str) -> StrategySpec:
    t = parent.table(name, required=False)
    kind = t.choice("kind", _STRATEGIES, default="time-dependent")
    spec = StrategySpec(
        kind=kind,
        e=t.number("e", default=1.0, low=0.001, high=1000.0),
        delta=t.integer("delta", default=1, low=1),
    )
    t.done()
    return spec


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)  # TOML dates and times


class _Table:
    """One TOML table being read: typed getters that name the key, and unknown-key checks."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, Mapping):
            raise ScenarioError("must be a table", key=path or "(root)")
        self._data = data
        self._path = path
        self._used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self._path}.{name}" if self._path else name

    def get(self, name: str, default: Any = None) -> Any:
        self._used.add(name)
        return self._data.get(name, default)

    def _required(self, name: str, default: Any) -> Any:
        value = self.get(name, default)
        if value is None:
            raise ScenarioError("is missing", key=self.key(name), reason="missing")
        return value

    def table(self, name: str, *, required: bool = True) -> _Table:
        value = self.get(name)
        if value is None:
            if required:
                raise ScenarioError("table is missing", key=self.key(name), reason="missing")
            value = {}
        return _Table(value, self.key(name))

    def tables(self, name: str, *, required: bool = True) -> list[_Table]:
        value = self.get(name)
        if value is None:
            if required:
                raise ScenarioError("is missing", key=self.key(name), reason="missing")
            return []
        if isinstance(value, Mapping):
            value = [value]
        if not isinstance(value, list) or not value:
            raise ScenarioError(
                "must be a table or a non-empty array of tables", key=self.key(name)
            )
        return [_Table(v, f"{self.key(name)}[{i}]") for i, v in enumerate(value)]

    def integer(
        self,
        name: str,
        *,
        default: int | None = None,
        low: int | None = None,
        high: int | None = None,
    ) -> int:
        value = self._required(name, default)
        if type(value) is not int:
            raise ScenarioError(
                f"must be an integer, not {value!r}", key=self.key(name), reason="wrong-type"
            )
        self._range(name, value, low, high)
        return value

    def number(
        self,
        name: str,
        *,
        default: float | None = None,
        low: float | None = None,
        high: float | None = None,
    ) -> float:
        value = self._required(name, default)
        if type(value) not in (int, float) or not math.isfinite(value):
            raise ScenarioError(
                f"must be a number, not {value!r}", key=self.key(name), reason="wrong-type"
            )
        self._range(name, value, low, high)
        return float(value)

    def _range(self, name: str, value: float, low: float | None, high: float | None) -> None:
        if low is not None and value < low:
            raise ScenarioError(
                f"must be at least {low}, not {value}", key=self.key(name), reason="out-of-range"
            )
        if high is not None and value > high:
            raise ScenarioError(
                f"must be at most {high}, not {value}", key=self.key(name), reason="out-of-range"
            )

    def string(self, name: str, *, default: str | None = None) -> str:
        value = self._required(name, default)
        if not isinstance(value, str) or not value:
            raise ScenarioError(
                f"must be non-empty text, not {value!r}", key=self.key(name), reason="wrong-type"
            )
        return value

    def strings(self, name: str, *, default: tuple[str, ...]) -> list[str]:
        value = self.get(name, list(default))
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, str) and v for v in value)
        ):
            raise ScenarioError(
                "must be a non-empty list of text", key=self.key(name), reason="wrong-type"
            )
        if len(set(value)) != len(value):
            raise ScenarioError("lists a value twice", key=self.key(name), reason="duplicate")
        return list(value)

    def choice(self, name: str, choices: tuple[str, ...], *, default: str) -> str:
        value = self.string(name, default=default)
        if value not in choices:
            raise ScenarioError(
                f"must be one of {', '.join(choices)}, not {value!r}",
                key=self.key(name),
                reason="bad-choice",
            )
        return value

    def range_ms(self, name: str, *, default: tuple[float, float]) -> tuple[float, float]:
        value = self.get(name, list(default))
        if type(value) in (int, float):
            value = [value, value]
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(type(v) in (int, float) and v >= 0 for v in value)
            or value[0] > value[1]
        ):
            raise ScenarioError(
                "must be a number of milliseconds or [low, high] with 0 <= low <= high",
                key=self.key(name),
            )
        return float(value[0]), float(value[1])

    def dist(self, name: str, *, low: int) -> Distribution:
        key = self.key(name)
        value = self._required(name, None)
        if type(value) is int:
            value = {"dist": "constant", "value": value}
        t = _Table(value, key)
        kind = t.choice("dist", _DISTS, default="constant")
        params: dict[str, float] = {}
        values: tuple[int, ...] = ()
        weights: tuple[float, ...] = ()
        if kind == "constant":
            params["value"] = t.integer("value", low=low)
        elif kind == "uniform":
            params["low"] = t.integer("low", low=low)
            params["high"] = t.integer("high", low=int(params["low"]))
        elif kind == "normal":
            params["mean"] = t.number("mean")
            params["sd"] = t.number("sd", low=0.0)
            params["min"] = t.integer("min", default=low, low=low)
            if t.get("max") is not None:
                params["max"] = t.integer("max", low=int(params["min"]))
        else:
            raw = t.get("values")
            if (
                not isinstance(raw, list)
                or not raw
                or not all(type(v) is int and v >= low for v in raw)
            ):
                raise ScenarioError(
                    f"must be a non-empty list of integers >= {low}", key=t.key("values")
                )
            values = tuple(raw)
            raw_w = t.get("weights", [])
            if not isinstance(raw_w, list) or (
                raw_w
                and (
                    len(raw_w) != len(values)
                    or not all(type(w) in (int, float) and w >= 0 for w in raw_w)
                    or not sum(raw_w)
                )
            ):
                raise ScenarioError(
                    "must list one non-negative weight per value (not all zero)",
                    key=t.key("weights"),
                )
            weights = tuple(float(w) for w in raw_w)
        t.done()
        return Distribution(
            dist=kind, params=tuple(sorted(params.items())), values=values, weights=weights
        )

    def done(self) -> None:
        unknown = sorted(set(self._data) - self._used)
        if unknown:
            raise ScenarioError(
                f"unknown key (known here: {', '.join(sorted(self._used)) or 'none'})",
                key=self.key(unknown[0]),
                reason="unknown-key",
            )
