"""What an upgrade remembers between runs with the same upgrade id, kept on the Prefect server."""

from __future__ import annotations

from typing import Any, ClassVar

from prefect.blocks.core import Block
from pydantic import Field

__all__ = ["UpgradeMemory"]


class UpgradeMemory(Block):
    """The changes an upgrade made and the sign-offs it was given, so a re-run resumes.

    Written by the flows, never by hand; delete it to make an upgrade id start afresh.
    """

    _block_type_name: ClassVar[str] = "Rubin Upgrade Memory"
    _block_type_slug: ClassVar[str] = "rubin-upgrade-memory"

    value: dict[str, Any] = Field(default_factory=dict)
