"""What an incremental upgrade touches: the CSCs an operator names, checked against the site.

An operator names the CSCs an incremental upgrade redeploys as ``Name[:index]`` (``Scheduler:1``;
``Scheduler`` alone means every instance) or as Kubernetes ``csc-class`` names (``scheduler``).
`resolve_affected` turns that list into inventory entries, or refuses it with one message that
lists every problem and the valid choices, before anything is changed. The other helpers here
decide, from those entries, which Jobs are deleted, which Argo CD apps are synced, which new
topics an operator may expect, how each CSC is cycled, and which telescopes need testing.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from blocks.site import CscEntry, CscName, SiteConfig, State, parse_csc_name

__all__ = [
    "AffectedError",
    "JobDeletion",
    "Telescope",
    "cycle_path",
    "expected_subjects",
    "job_deletions",
    "resolve_affected",
    "telescopes_affected",
]

Telescope = Literal["AuxTel", "MainTel"]

_CLASS = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_TOPIC = re.compile(
    r"^(?:lsst\.(?P<subname>[a-z0-9_]+)\.)?(?P<component>[A-Z][A-Za-z0-9]*)\."
    r"(?P<sal_name>[A-Za-z][A-Za-z0-9_]*)(?:-value)?$"
)
# Every state a CSC can be commanded to, starting and ending at the one it is expected in.
_CYCLES: dict[State, tuple[State, ...]] = {
    State.STANDBY: (State.DISABLED, State.ENABLED, State.DISABLED, State.STANDBY),
    State.DISABLED: (State.ENABLED, State.DISABLED, State.STANDBY, State.DISABLED),
    State.ENABLED: (State.DISABLED, State.STANDBY, State.DISABLED, State.ENABLED),
}
# Component-name prefixes of each telescope's CSCs (CC: ComCam, on the Simonyi telescope).
_PREFIXES: dict[Telescope, tuple[str, ...]] = {"AuxTel": ("AT",), "MainTel": ("MT", "CC")}
# Components with an instance per telescope, told apart by their Job's chart alias.
_SHARED = frozenset({"ScriptQueue", "Scheduler", "OCPS"})


class AffectedError(ValueError):
    """The CSCs or topics given cannot be used; the message lists every problem."""

    def __init__(self, site: str, problems: list[str], choices: str) -> None:
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(
            f"incremental upgrade at {site} refused; nothing was changed:\n{lines}\n{choices}"
        )
        self.problems = problems


def _choices(site: SiteConfig) -> str:
    classes = ", ".join(sorted(site.csc_classes()))
    return (
        f"Valid csc-classes at {site.name}: {classes}. Or name CSCs that run as Kubernetes Jobs "
        "as Name[:index], such as Scheduler:1 (Name alone means every instance)."
    )


def _suggest(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def _by_name(site: SiteConfig, text: str, problems: list[str]) -> list[CscEntry]:
    try:
        wanted = parse_csc_name(text)
    except ValueError as exc:
        problems.append(f"{text!r}: {exc}, or a lowercase csc-class such as scheduler")
        return []
    index_given = ":" in text
    entries = [
        entry
        for entry in site.cscs
        if entry.name == wanted or (not index_given and entry.name.name == wanted.name)
    ]
    if not entries:
        names = {str(entry.name) for entry in site.cscs} | {e.name.name for e in site.cscs}
        problems.append(
            f"{text!r} is not in the {site.name} inventory" + _suggest(text.strip(), names)
        )
        return []
    bare = [entry for entry in entries if entry.kubernetes is None]
    problems.extend(
        f"{entry.name} runs on {entry.bare_metal}, not as a Kubernetes Job: an incremental "
        "upgrade redeploys Jobs through Argo CD (upgrade it by hand)"
        for entry in bare
    )
    return [] if bare else entries


def _by_class(site: SiteConfig, text: str, problems: list[str]) -> list[CscEntry]:
    entries = [
        entry
        for entry in site.cscs
        if entry.kubernetes is not None and entry.kubernetes.csc_class == text
    ]
    if not entries:
        problems.append(
            f"{text!r} is not a csc-class at {site.name}" + _suggest(text, site.csc_classes())
        )
    return entries


def resolve_affected(site: SiteConfig, requested: Sequence[str]) -> list[CscEntry]:
    """The inventory entries of the CSCs ``requested``, in inventory order, each once.

    Raises
    ------
    AffectedError
        Nothing was requested, or some items are not CSCs or csc-classes of the site, or name
        CSCs that do not run as Kubernetes Jobs; the message lists each and the valid choices.
    """
    problems: list[str] = []
    found: set[CscName] = set()
    items = [text.strip() for text in requested]
    if not any(items):
        problems.append("no CSCs given: name the CSCs or csc-classes the upgrade changes")
    for text in items:
        if not text:
            continue
        if _CLASS.match(text):
            entries = _by_class(site, text, problems)
        else:
            entries = _by_name(site, text, problems)
        found.update(entry.name for entry in entries)
    if problems:
        raise AffectedError(site.name, problems, _choices(site))
    return [entry for entry in site.cscs if entry.name in found]


def expected_subjects(
    site: SiteConfig, topics: Sequence[str], components: Iterable[str]
) -> dict[str, str]:
    """The registry subject of each expected new topic (``Scheduler.logevent_x``, or the full
    ``lsst.sal.Scheduler.logevent_x``), by the text the operator gave.

    Raises
    ------
    AffectedError
        A topic is not a SAL topic name, is on another Kafka subname, or belongs to a component
        this upgrade does not redeploy (its CSCs would not register it).
    """
    redeployed = set(components)
    subname = site.kafka.sal_subname
    subjects: dict[str, str] = {}
    problems: list[str] = []
    for text in topics:
        match = _TOPIC.match(text.strip())
        if match is None:
            problems.append(
                f"expected topic {text!r} is not a SAL topic: write Component.sal_name, such "
                f"as Scheduler.logevent_newEvent, or lsst.{subname}.Scheduler.logevent_newEvent"
            )
            continue
        if match["subname"] not in (None, subname):
            problems.append(f"expected topic {text!r} is not on lsst.{subname}")
            continue
        if match["component"] not in redeployed:
            problems.append(
                f"expected topic {text!r}: {match['component']} is not redeployed by this "
                f"upgrade ({', '.join(sorted(redeployed))}), so nothing would register it"
            )
            continue
        subjects[text] = f"lsst.{subname}.{match['component']}.{match['sal_name']}-value"
    if problems:
        raise AffectedError(
            site.name, problems, "Topics are checked in the schema registry once the CSCs start."
        )
    return subjects


@dataclass(frozen=True)
class JobDeletion:
    """One ``kubectl delete job -n <namespace> -l csc-class=<class>``, narrowed to ``cscs``
    (chart aliases) when only some instances of the class are redeployed."""

    namespace: str
    csc_class: str
    cscs: tuple[str, ...] | None

    @property
    def key(self) -> str:
        return f"delete-jobs-{self.namespace}-{self.csc_class}"

    @property
    def selector(self) -> str:
        selector = f"csc-class={self.csc_class}"
        return selector + (f",csc in ({','.join(self.cscs)})" if self.cscs else "")


def job_deletions(site: SiteConfig, entries: Iterable[CscEntry]) -> list[JobDeletion]:
    """The Job deletions that remove exactly the Jobs of ``entries``, by namespace and class."""
    wanted: dict[tuple[str, str], list[str]] = {}
    for entry in entries:
        placement = entry.kubernetes
        if placement is None:
            continue
        aliases = wanted.setdefault((placement.namespace, placement.csc_class), [])
        if placement.csc not in aliases:
            aliases.append(placement.csc)
    deletions = []
    for (namespace, csc_class), aliases in wanted.items():
        whole = {
            entry.kubernetes.csc
            for entry in site.cscs
            if entry.kubernetes is not None
            and (entry.kubernetes.namespace, entry.kubernetes.csc_class) == (namespace, csc_class)
        }
        narrowed = None if set(aliases) >= whole else tuple(aliases)
        deletions.append(JobDeletion(namespace, csc_class, narrowed))
    return deletions


def cycle_path(expected: State) -> tuple[State, ...]:
    """The states an affected CSC is taken through after its upgrade: every commandable one,
    ending where it is expected to be (STANDBY → DISABLED → ENABLED → DISABLED → STANDBY for
    most). Empty for a CSC expected OFFLINE or in FAULT: there is nothing to cycle."""
    return _CYCLES.get(expected, ())


def telescopes_affected(entries: Iterable[CscEntry]) -> list[Telescope]:
    """The telescopes whose components changed, which need minimal testing at a test stand.

    A component belongs to AuxTel when its name starts with ``AT``, to the Simonyi telescope
    (MainTel) with ``MT`` or ``CC`` (ComCam). Shared components — ScriptQueue, Scheduler, OCPS —
    belong to the telescope their Job's chart alias names (``atqueue``, ``mtscheduler``,
    ``ccocps``); the OCS instances, ESS, calibration and observatory CSCs to neither.
    """
    found: set[Telescope] = set()
    for entry in entries:
        placement = entry.kubernetes
        alias = placement.csc.upper() if placement and entry.name.name in _SHARED else ""
        for telescope, prefixes in _PREFIXES.items():
            if entry.name.name.startswith(prefixes) or alias.startswith(prefixes):
                found.add(telescope)
    return [telescope for telescope in _PREFIXES if telescope in found]
