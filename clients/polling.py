"""How long to wait between two looks at something that is awaited."""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["FIRST_POLL_S", "poll_delays"]

#: The first delay: an Argo CD sync or a lag drain on a small site can end within it.
FIRST_POLL_S = 0.25


def poll_delays(every_s: float, first_s: float = FIRST_POLL_S) -> Iterator[float]:
    """The delays between polls: ``first_s``, doubled each time up to ``every_s``, then
    ``every_s`` for ever.

    A wait that ends soon is noticed soon, not a whole ``every_s`` later, and a long one costs
    the service about as few requests as polling every ``every_s`` (a handful more).
    """
    delay = min(first_s, every_s)
    while True:
        yield delay
        delay = min(delay * 2, every_s)
