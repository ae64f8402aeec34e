"""The CSCs a figure publishes and asks about, kept light: the driver imports this, not the
publishers (which import the simulated site)."""

from __future__ import annotations

from blocks.site import CscName, State

__all__ = ["HEARTBEAT_PERIOD_S", "LAYOUTS", "final_state", "path", "synthetic_names"]

#: salobj's heartbeat period, which the simulated CSCs keep.
HEARTBEAT_PERIOD_S = 1.0

#: Synthetic layouts: (components, indices per component); one index means not indexed.
LAYOUTS: dict[str, tuple[int, int]] = {"250x4": (250, 4), "1000x1": (1000, 1)}

# The states a synthetic CSC goes through, by its position (every CSC starts in STANDBY).
_PATHS = (
    (State.STANDBY,),
    (State.STANDBY, State.DISABLED),
    (State.STANDBY, State.DISABLED, State.ENABLED),
    (State.STANDBY, State.DISABLED, State.ENABLED, State.FAULT),
)


def synthetic_names(layout: str) -> list[CscName]:
    """The CSCs of a synthetic layout, e.g. ``Comp007:3`` or ``Solo0123``."""
    components, indices = LAYOUTS[layout]
    if indices == 1:
        return [CscName(name=f"Solo{c:04d}") for c in range(components)]
    return [
        CscName(name=f"Comp{c:03d}", index=i)
        for c in range(components)
        for i in range(1, indices + 1)
    ]


def path(position: int) -> tuple[State, ...]:
    """The summary states the synthetic CSC at ``position`` publishes, in order."""
    return _PATHS[position % len(_PATHS)]


def final_state(position: int) -> State:
    """The last summary state the synthetic CSC at ``position`` publishes."""
    return path(position)[-1]
