"""SAL's enumerations that travel in messages: command acks and the ScriptQueue's script states.

The values are the wire values (rubin-systems.md §2 and §3). The CSC summary state is
`blocks.site.State`, re-exported here so that SAL code has one place to import enums from.
"""

from __future__ import annotations

from enum import IntEnum

from blocks.site import State

__all__ = [
    "FINAL_ACKS",
    "SalRetCode",
    "ScriptProcessState",
    "ScriptState",
    "State",
]


class SalRetCode(IntEnum):
    """The ``ack`` field of ``ackcmd``."""

    CMD_ACK = 300
    CMD_INPROGRESS = 301
    CMD_STALLED = 302
    CMD_COMPLETE = 303
    CMD_NOPERM = -300
    CMD_NOACK = -301
    CMD_FAILED = -302
    CMD_ABORTED = -303
    CMD_TIMEOUT = -304


#: Acks after which no other ack follows for the same command.
FINAL_ACKS = frozenset(set(SalRetCode) - {SalRetCode.CMD_ACK, SalRetCode.CMD_INPROGRESS})


class ScriptState(IntEnum):
    """``ScriptQueue.logevent_script.scriptState``: where a script is in its own life."""

    UNKNOWN = 0
    UNCONFIGURED = 1
    CONFIGURED = 2
    RUNNING = 3
    PAUSED = 4
    ENDING = 5
    STOPPING = 6
    FAILING = 7
    DONE = 8
    STOPPED = 9
    FAILED = 10
    CONFIGURE_FAILED = 11


class ScriptProcessState(IntEnum):
    """``ScriptQueue.logevent_script.processState``: the state of the script's process."""

    UNKNOWN = 0
    LOADING = 1
    CONFIGURED = 2
    RUNNING = 3
    DONE = 4
    LOADFAILED = 5
    CONFIGURE_FAILED = 6
    TERMINATED = 7
