"""TensorRT runtime layer: TensorRT optimisation profiles, derived from the model's TensorSpecs (torch- and TensorRT-free).

A profile gives a min/opt/max range for each symbolic axis ("batch", "time"); the shapes of every
input follow from its ``TensorSpec`` (``("batch", "time", 2304)`` -> ``(1, 1, 2304)`` ...
``(16, 300, 2304)``), so no tensor name or size is typed twice. An engine holds several profiles
(e.g. live segments and long ones) and the runner picks one per call from the input shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from abaw_rt.errors import AbawRtError
from abaw_rt.specs import BATCH, TIME, TensorSpec

Shape = tuple[int, ...]


@dataclass(frozen=True)
class AxisRange:
    """min <= opt <= max sizes of one symbolic axis."""

    min: int  # smallest size the engine accepts
    opt: int  # size TensorRT tunes its kernels for
    max: int  # largest size the engine accepts (memory is planned for it)

    def __post_init__(self) -> None:
        vals = (self.min, self.opt, self.max)
        if (
            not all(isinstance(v, int) and not isinstance(v, bool) for v in vals)
            or not 1 <= self.min <= self.opt <= self.max
        ):
            raise AbawRtError(f"axis range {list(vals)}: expected integers with 1 <= min <= opt <= max")

    def __contains__(self, size: int) -> bool:
        return self.min <= size <= self.max

    def as_list(self) -> list[int]:
        return [self.min, self.opt, self.max]

    @classmethod
    def parse(cls, value: Sequence[int] | str, what: str = "axis") -> "AxisRange":
        """From [min, opt, max] or "min,opt,max" (a single number means a fixed size)."""
        try:
            parts = [int(x) for x in (value.split(",") if isinstance(value, str) else value)]
        except (TypeError, ValueError):
            raise AbawRtError(f"{what} range {value!r}: expected MIN,OPT,MAX integers") from None
        if len(parts) == 1:
            parts = parts * 3
        if len(parts) != 3:
            raise AbawRtError(f"{what} range {value!r}: expected MIN,OPT,MAX (three integers)")
        try:
            return cls(*parts)
        except AbawRtError as exc:
            raise AbawRtError(f"{what} {exc}") from None


@dataclass(frozen=True)
class ProfileSpec:
    """One optimisation profile: ranges for the batch and time axes."""

    name: str  # e.g. "live", "window", "long"; shown in errors and the sidecar
    batch: AxisRange  # segments per call
    time: AxisRange  # frames per segment

    def axes(self) -> dict[str, AxisRange]:
        return {BATCH: self.batch, TIME: self.time}

    def contains(self, batch: int, time: int) -> bool:
        return batch in self.batch and time in self.time

    def shapes(self, specs: Sequence[TensorSpec]) -> dict[str, tuple[Shape, Shape, Shape]]:
        """{input name: (min shape, opt shape, max shape)} for every input spec."""
        axes = self.axes()
        out = {}
        for spec in specs:
            picked = []
            for which in ("min", "opt", "max"):
                dims = []
                for d in spec.shape:
                    if isinstance(d, int):
                        dims.append(d)
                    elif d in axes:
                        dims.append(getattr(axes[d], which))
                    else:
                        raise AbawRtError(
                            f"input '{spec.name}': symbolic axis '{d}' has no range in profile '{self.name}' "
                            f"(profiles give {sorted(axes)})"
                        )
                picked.append(tuple(dims))
            out[spec.name] = tuple(picked)
        return out

    def describe(self) -> str:
        b, t = self.batch, self.time
        return f"{self.name}: batch {b.min}..{b.max} (opt {b.opt}), time {t.min}..{t.max} (opt {t.opt})"

    def to_dict(self) -> dict:
        return {"name": self.name, "batch": self.batch.as_list(), "time": self.time.as_list()}

    @classmethod
    def from_dict(cls, d: Mapping, source: str = "profile") -> "ProfileSpec":
        try:
            name = str(d["name"])
            return cls(
                name,
                AxisRange.parse(d["batch"], f"{source} '{name}' batch"),
                AxisRange.parse(d["time"], f"{source} '{name}' time"),
            )
        except KeyError as exc:
            raise AbawRtError(
                f"{source}: lacks {exc} (expected name, batch [min, opt, max], time [min, opt, max])"
            ) from None
        except TypeError:
            raise AbawRtError(f"{source}: expected an object with name, batch and time, got {d!r}") from None

    @classmethod
    def parse(cls, text: str) -> "ProfileSpec":
        """From the CLI form ``NAME:BMIN,BOPT,BMAX:TMIN,TOPT,TMAX`` (e.g. ``live:1,1,4:1,75,300``)."""
        parts = text.split(":")
        if len(parts) != 3 or not parts[0]:
            raise AbawRtError(
                f"--profile {text!r}: expected NAME:BMIN,BOPT,BMAX:TMIN,TOPT,TMAX, e.g. live:1,1,4:1,75,300"
            )
        return cls(
            parts[0],
            AxisRange.parse(parts[1], f"--profile {parts[0]} batch"),
            AxisRange.parse(parts[2], f"--profile {parts[0]} time"),
        )

    def cli(self) -> str:
        """The ``--profile`` argument that recreates this profile."""
        return f"{self.name}:{','.join(map(str, self.batch.as_list()))}:{','.join(map(str, self.time.as_list()))}"


def default_profiles(window: int) -> tuple[ProfileSpec, ...]:
    """Two buckets for a checkpoint with segment length ``window`` (w): segments up to w, long ones up to 4w.

    "window" covers 1..w frames for batches of up to 16 segments, tuned for 8 full windows (the
    offline video path); "long" covers w..4w frames for up to 4 segments (verify's 2w case, whole
    short clips in one call).
    """
    return (
        ProfileSpec("window", AxisRange(1, 8, 16), AxisRange(1, window, window)),
        ProfileSpec("long", AxisRange(1, 1, 4), AxisRange(window, 2 * window, 4 * window)),
    )


def validate_profiles(
    profiles: Sequence[ProfileSpec], window: int, source: str = "profiles"
) -> tuple[ProfileSpec, ...]:
    """Check a profile set: at least one, unique names, and the time ranges together cover 1..window.

    Raises:
        AbawRtError: naming the problem and the profiles given.
    """
    profiles = tuple(profiles)
    if not profiles:
        raise AbawRtError(f"{source}: at least one optimisation profile is needed")
    names = [p.name for p in profiles]
    if len(set(names)) != len(names):
        raise AbawRtError(f"{source}: duplicate profile names {names}")
    covered = 0  # every length 1..covered is accepted by some profile
    for p in sorted(profiles, key=lambda p: p.time.min):
        if p.time.min <= covered + 1:
            covered = max(covered, p.time.max)
    if covered < window:
        have = "; ".join(p.describe() for p in profiles)
        raise AbawRtError(
            f"{source}: time ranges cover 1..{covered} only, expected at least 1..{window} (the segment length w); "
            f"have {have}"
        )
    return profiles


def select_profile(profiles: Sequence[ProfileSpec], batch: int, time: int) -> int:
    """Index of the profile to run (batch, time) with: the tightest one that accepts it.

    Tightest = smallest max batch x max time, so short live segments run on kernels tuned for them
    rather than on the long bucket's. Ties keep the engine's order.

    Raises:
        AbawRtError: no profile accepts the shape; lists the profiles.
    """
    fitting = [(p.batch.max * p.time.max, i) for i, p in enumerate(profiles) if p.contains(batch, time)]
    if not fitting:
        have = "; ".join(p.describe() for p in profiles)
        raise AbawRtError(
            f"input shape batch {batch}, time {time} is outside every optimisation profile of this engine ({have}); "
            "split the batch or the segment, or rebuild the engine with a profile that covers it"
        )
    return min(fitting)[1]


def fits_any(profiles: Sequence[ProfileSpec], batch: int, time: int) -> bool:
    return any(p.contains(batch, time) for p in profiles)
