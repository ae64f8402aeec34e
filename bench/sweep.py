"""Figure 1: one sweep of CSC summary states and heartbeat liveness, from a cold client.

Set-ups, each on a fresh tansu broker, with the simulated registry in a process of its own (at a
site the registry is another service; one registry serves every set-up) and the CSCs in a third:

- ``summit-122``: the Summit's inventory (deployments/sites/summit.yaml) as a `CscFleet`;
- ``1000-250x4``: 1,000 CSCs as 250 components of 4 indices, written straight with the codec;
- ``1000-1000x1`` (full runs only): 1,000 components of one CSC each, likewise.

Which 1,000 is reported: ts_xml has 63 component types and the Summit runs 122 CSCs of 57 of
them (39 ESS), so a site of 1,000 CSCs would have many indices per component. 250 x 4 already
has four times more components than exist; 1,000 x 1 (a schema, a topic pair and a registry
request per CSC) is a stress case no site can have, shown for what it says about the cost per
component.

Ours: a cold `SalClient` and registry client (no schema cached) per measurement;
`SalClient.summary_states` alone, then `SalClient.statuses` (states and heartbeat liveness).
Baseline (`bench.worker.naive_sweep`): every CSC in turn, one consumer per topic. Where the
baseline would take minutes it is timed on an even sample of the CSCs and scaled to all of them:
it is linear by construction (the CSCs are read one after the other), and each CSC left out adds
the average of the sampled CSCs after the first, so one-time costs are counted once. The line
says when it was sampled.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from bench.harness import (
    ROOT,
    Figure,
    Options,
    Target,
    Worker,
    WorkerError,
    at_least,
    at_most,
    median,
    service,
)
from bench.layouts import HEARTBEAT_PERIOD_S, final_state, synthetic_names
from blocks.site import CscName, load_site_file
from sim.broker import TansuBroker

__all__ = ["figures"]

SITE_FILE = ROOT / "deployments" / "sites" / "summit.yaml"
#: The liveness window the flows use (`blocks.site` timeouts: ``heartbeat_window_s``).
WINDOW_S = 5.0
TARGET_RATIO = 10.0


@dataclass(frozen=True)
class _Setup:
    name: str
    names: list[CscName]
    #: State targets in seconds; states + liveness get one heartbeat period more.
    target_s: float
    #: How `bench.publishers` publishes the CSCs: its kind, and its arguments after the registry.
    publisher: tuple[str, ...]
    #: The summary state each CSC publishes last.
    expected: dict[str, float]
    ratio_target: bool
    note: str = ""


def _setups(quick: bool) -> list[_Setup]:
    site = load_site_file(SITE_FILE)
    setups = [
        _Setup(
            "summit-122",
            [entry.name for entry in site.cscs],
            1.0,
            ("fleet", str(SITE_FILE)),
            # The fleet starts each CSC in the state the site file says it comes back in.
            {str(entry.name): float(entry.expected_state) for entry in site.cscs},
            ratio_target=False,
        )
    ]
    layouts = ("250x4",) if quick else ("250x4", "1000x1")
    for layout in layouts:
        names = synthetic_names(layout)
        setups.append(
            _Setup(
                f"1000-{layout}",
                names,
                3.0,
                ("synthetic", layout),
                {str(n): float(final_state(p)) for p, n in enumerate(names)},
                ratio_target=True,
                note="" if layout == "250x4" else "stress layout, not the reported one",
            )
        )
    return setups


def _sample(names: Sequence[CscName], size: int) -> list[CscName]:
    if size >= len(names):
        return list(names)
    step = len(names) / size
    return [names[int(k * step)] for k in range(size)]


def _check(label: str, found: dict[str, list[Any]], setup: _Setup, names: list[CscName]) -> None:
    """Every CSC asked about has a state and a live heartbeat (and the state it was given)."""
    problems = []
    for csc in map(str, names):
        state, age = found.get(csc, [None, None])
        if state is None or age is None:
            problems.append(f"{csc}: state {state}, heartbeat age {age}")
        elif state != setup.expected[csc]:
            problems.append(f"{csc}: state {state}, published {setup.expected[csc]}")
    if problems:
        raise AssertionError(
            f"{setup.name}: {label} got {len(problems)} CSCs wrong, such as "
            + "; ".join(problems[:5])
        )


async def _measure(
    options: Options,
    registry: str,
    *,
    setup: _Setup,
    rounds: int,
    state_rounds: int,
    naive_rounds: int,
    naive_size: int,
) -> tuple[dict[str, Any], dict[str, Any], list[CscName]]:
    sample = _sample(setup.names, naive_size)
    options.note(f"{setup.name}: starting")
    async with (
        Worker("sweep-ours") as ours_worker,
        Worker("sweep-naive") as naive_worker,
        TansuBroker() as broker,
        service(
            "bench.publishers",
            setup.publisher[0],
            broker.bootstrap_servers,
            registry,
            *setup.publisher[1:],
        ),
    ):
        options.note(f"{setup.name}: CSCs publishing")
        params = {"bootstrap": broker.bootstrap_servers, "registry": registry, "window_s": WINDOW_S}
        try:
            ours = await ours_worker.run(
                {
                    **params,
                    "names": [str(n) for n in setup.names],
                    "rounds": rounds,
                    "state_rounds": state_rounds,
                },
                timeout_s=60 + 30 * (rounds + state_rounds),
            )
        except WorkerError as exc:
            # Ours hanging is a result too: its figure fails, the baseline is still measured.
            ours = {"error": str(exc)}
        options.note(f"{setup.name}: ours measured")
        naive = await naive_worker.run(
            {
                **params,
                "names": [str(n) for n in sample],
                "total": len(setup.names),
                "rounds": naive_rounds,
            },
            timeout_s=60 + 3 * len(sample) * naive_rounds,
        )
        options.note(f"{setup.name}: baseline measured")
    return ours, naive, sample


async def figures(options: Options) -> AsyncIterator[Figure]:
    # One registry for every set-up: the subjects differ, and a lookup by id costs the same.
    async with service("bench.registry") as registry:
        for setup in _setups(options.quick):
            for figure in await _figures(options, registry, setup):
                yield figure


async def _figures(options: Options, registry: str, setup: _Setup) -> list[Figure]:
    small = len(setup.names) <= 200
    if options.quick:
        rounds, state_rounds, naive_rounds, naive_size = (3, 3, 1, 8) if small else (2, 1, 1, 16)
    else:
        rounds, state_rounds, naive_rounds = 5, 5, 3
        naive_size = len(setup.names) if small else 100
    ours, naive, sample = await _measure(
        options,
        registry,
        setup=setup,
        rounds=rounds,
        state_rounds=state_rounds,
        naive_rounds=naive_rounds,
        naive_size=naive_size,
    )
    if "error" in naive:
        raise RuntimeError(f"{setup.name}: the naive sweep failed: {naive['error']}")
    _check("the naive sweep", naive["found"], setup, sample)
    error = ours.get("error", "")
    if not error:
        _check("SalClient", ours["found"], setup, setup.names)
        disagree = [str(n) for n in sample if naive["found"][str(n)][0] != ours["found"][str(n)][0]]
        if disagree:
            raise AssertionError(f"{setup.name}: the two sweeps disagree on {disagree[:5]}")
    # A failed measurement leaves NaN, which fails every target.
    states_s = median(ours["states_s"]) if ours.get("states_s") else math.nan
    statuses_s = median(ours["seconds"]) if not error else math.nan
    naive_s = median(naive["seconds"])
    targets: list[Target] = [
        at_most(f"states < {setup.target_s:g} s", states_s, setup.target_s),
        at_most(
            f"states+liveness < {setup.target_s + HEARTBEAT_PERIOD_S:g} s",
            statuses_s,
            setup.target_s + HEARTBEAT_PERIOD_S,
        ),
    ]
    if setup.ratio_target:
        targets.append(at_least(f">= {TARGET_RATIO:g}x", naive_s / statuses_s, TARGET_RATIO))
    how = (
        f"baseline timed on {len(sample)} CSCs ({median(naive['sample_seconds']):.1f} s) "
        f"and scaled to {len(setup.names)}"
        if len(sample) < len(setup.names)
        else "baseline on every CSC"
    )
    detail = (
        f"states+liveness; states alone {states_s:.3f} s; medians of {rounds} "
        f"({state_rounds} for states alone) and {naive_rounds}; {how}"
    )
    return [
        Figure(
            f"sweep-{setup.name}",
            statuses_s,
            "s",
            naive_s,
            targets=targets,
            detail=f"{setup.note}; {detail}" if setup.note else detail,
            error=f"SalClient failed: {error}" if error else "",
        ),
        Figure(
            f"memory-sweep-{setup.name}",
            ours["rss_kib"] / 1024 if "rss_kib" in ours else math.nan,
            "MiB",
            naive["rss_kib"] / 1024,
            detail="growth of the worker's peak RSS over its rounds (ru_maxrss)",
            error="" if "rss_kib" in ours else "not measured: the worker was stopped",
        ),
    ]
