"""What the people around an upgrade do, played on a simulated site.

At a real site some gates stand for work done by people: the Phalanx pull request is merged by
its reviewers, the bare-metal services are started by the camera team and the system
principals. On a simulated site the rehearsal does that work when the run reaches the gate —
before anyone answers it — so that what the flow does next has the consequences it would have.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from blocks.site import CscName
from blocks.upgrade_site import save_site_block as save_block
from deployments.operator import GateAnswer
from sim.site import SimulatedSite

__all__ = ["PHALANX_PR_URL", "Rehearsal", "save_site_block", "short_of_expected"]

#: What the simulated operator types as the merged Phalanx pull request.
PHALANX_PR_URL = "https://github.com/lsst-sqre/phalanx/pull/4242"


@dataclass
class Rehearsal:
    """The people's side of a rehearsal on ``site``: what happens at which gate."""

    site: SimulatedSite
    revision: str = "5f3e2a1"
    done: list[str] = field(default_factory=list)

    async def at_gate(self, gate: str) -> str | None:
        """Do the people's work for ``gate`` (once); return what was done, if anything."""
        if gate in self.done:
            return None
        if gate == "phalanx-merged":
            tag = self.site.options.upgrade_image_tag
            self.site.model.publish_upgrade(revision=self.revision, image_tag=tag)
            what = f"the Phalanx PR was merged: revision {self.revision}, images :{tag}"
        elif gate == "bare-metal-startup":
            started = self.site.start_bare_metal()
            what = f"the bare-metal CSCs were started ({len(started)})"
        else:
            return None
        self.done.append(gate)
        return what

    def answers(self) -> dict[str, GateAnswer]:
        """A simulated operator's answers that do the people's work first."""

        def doing(gate: str) -> GateAnswer:
            async def action() -> None:
                await self.at_gate(gate)

            extra = {"phalanx_pr_url": PHALANX_PR_URL} if gate == "phalanx-merged" else {}
            return GateAnswer(extra=extra, action=action)

        return {gate: doing(gate) for gate in ("phalanx-merged", "bare-metal-startup")}


def short_of_expected(site: SimulatedSite) -> list[str]:
    """The simulated CSCs not in the state their site file expects, as ``Name:i STATE``."""
    if site.fleet is None:
        return ["no CSC fleet is running"]
    short: list[str] = []
    for entry in site.base.cscs:
        name: CscName = entry.name
        state = site.fleet.state_of(name)
        if state is not entry.expected_state:
            now = state.name if state is not None else "not running"
            short.append(f"{name.name}:{name.index} {now} (expected {entry.expected_state.name})")
    return short


async def save_site_block(site: SimulatedSite, name: str) -> None:
    """Save the simulated site as the `Rubin Upgrade Site` block ``name``, with its credentials."""
    await save_block(site.site_config(name), site.credentials(), name)
