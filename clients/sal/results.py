"""Typed results of SAL operations: a command's final ack and a CSC's observed status."""

from __future__ import annotations

from dataclasses import dataclass

from blocks.site import CscName, State
from clients.sal.enums import SalRetCode

__all__ = ["AckResult", "CscStatus"]


@dataclass(frozen=True, kw_only=True)
class AckResult:
    """One ``ackcmd`` message for a command this client sent.

    ``result`` is the CSC's text (``"Done"``, ``"Failed: <reason>"``, or for ScriptQueue ``add``
    the new script's index); ``timeout_s`` is the time the CSC still needs (``CMD_INPROGRESS``).
    """

    csc: CscName
    command: str
    ack: SalRetCode | int
    error: int
    result: str
    timeout_s: float
    seq_num: int
    cmdtype: int
    identity: str
    origin: int

    @property
    def ok(self) -> bool:
        """The command completed (``CMD_COMPLETE``)."""
        return self.ack == SalRetCode.CMD_COMPLETE

    @property
    def ack_name(self) -> str:
        return self.ack.name if isinstance(self.ack, SalRetCode) else str(self.ack)


@dataclass(frozen=True, kw_only=True)
class CscStatus:
    """What Kafka says about one CSC right now.

    ``state`` is its last ``summaryState`` (None if it never published one);
    ``heartbeat_age_s`` is how long ago its last heartbeat was seen (None if none was seen).
    """

    csc: CscName
    state: State | None
    heartbeat_age_s: float | None

    def alive(self, window_s: float) -> bool:
        """It sent a heartbeat within the last ``window_s`` seconds."""
        return self.heartbeat_age_s is not None and self.heartbeat_age_s <= window_s

    def describe(self) -> str:
        state = "no summaryState" if self.state is None else self.state.name
        if self.heartbeat_age_s is None:
            beat = "no heartbeat"
        else:
            beat = f"heartbeat {self.heartbeat_age_s:.1f} s ago"
        return f"{state}, {beat}"
