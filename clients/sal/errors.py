"""The errors of the SAL client: one base, `SalError`, and one class per way a step can fail."""

from __future__ import annotations

from collections.abc import Mapping

from blocks.site import CscName
from clients.sal.results import AckResult

__all__ = [
    "CommandAborted",
    "CommandError",
    "CommandFailed",
    "CommandNoPermission",
    "CommandTimedOut",
    "NoAckError",
    "SalDecodeError",
    "SalError",
    "SalKafkaError",
    "SalSchemaError",
    "SalTopicError",
    "StateWaitTimeout",
    "TransitionError",
]


class SalError(Exception):
    """Base of every error the SAL client raises."""


class SalKafkaError(SalError):
    """Kafka could not be reached or refused a request."""


class SalSchemaError(SalError):
    """A topic has no usable schema in the registry, or a message does not fit its schema."""


class SalTopicError(SalError):
    """A SAL topic does not exist on the brokers (topics are never auto-created)."""


class SalDecodeError(SalError):
    """A message is not in the Confluent Avro wire format or cannot be decoded."""


class CommandError(SalError):
    """A command ended with a final ack other than ``CMD_COMPLETE``; ``ack`` is that ack."""

    def __init__(self, ack: AckResult) -> None:
        super().__init__(
            f"{ack.csc} {ack.command}: {ack.ack_name} (error {ack.error}): {ack.result or '-'}"
        )
        self.ack = ack

    @property
    def reason(self) -> str:
        """The CSC's own words (the ack's ``result``)."""
        return self.ack.result


class CommandFailed(CommandError):  # noqa: N818 (named after the ack)
    """``CMD_FAILED`` (or ``CMD_STALLED``/``CMD_NOACK`` from the CSC): `reason` says why."""


class CommandNoPermission(CommandError):  # noqa: N818 (named after the ack)
    """``CMD_NOPERM``: the CSC refused this sender."""


class CommandTimedOut(CommandError):  # noqa: N818 (named after the ack)
    """``CMD_TIMEOUT``: the CSC gave up on the command itself."""


class CommandAborted(CommandError):  # noqa: N818 (named after the ack)
    """``CMD_ABORTED``: the command was cancelled on the CSC's side."""


class NoAckError(SalError, TimeoutError):
    """No final ack arrived in time; ``last`` is the last ack seen (None if none).

    The CSC may still act on the command: check its state before retrying.
    """

    def __init__(
        self, csc: CscName, command: str, timeout_s: float, last: AckResult | None
    ) -> None:
        seen = "no ack at all" if last is None else f"last ack {last.ack_name}"
        super().__init__(f"{csc} {command}: no final ack within {timeout_s:.1f} s ({seen})")
        self.csc = csc
        self.command = command
        self.timeout_s = timeout_s
        self.last = last


class TransitionError(SalError):
    """A summary-state transition cannot be made (no path, or the CSC's state is unknown)."""


class StateWaitTimeout(SalError, TimeoutError):  # noqa: N818 (a kind of TimeoutError)
    """A wait on CSC states ran out of time; ``short`` maps each CSC still short to its status."""

    def __init__(self, what: str, deadline_s: float, short: Mapping[CscName, str]) -> None:
        listed = "; ".join(f"{csc}: {status}" for csc, status in sorted(short.items(), key=_key))
        super().__init__(
            f"{what}: {len(short)} CSC(s) still short after {deadline_s:.1f} s: {listed}"
        )
        self.what = what
        self.deadline_s = deadline_s
        self.short = dict(short)


def _key(item: tuple[CscName, str]) -> tuple[str, int]:
    return (item[0].name, item[0].index)
