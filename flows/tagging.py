"""The run's tags go on its sections (subflow runs), not on its task runs.

Whoever follows an upgrade by its tags (the UI's filters, the operator resuming a sign-off, a
simulated operator) looks for flow runs: the top run and the sections it pauses in. So the
sections carry the run's tags.

Task runs do not. Prefect checks every tagged task run against the tag concurrency limits
before it starts, with one API call (a "no limit" answer is kept for 5 s only), so a tagged
task waits on the Prefect server. Against a server on SQLite that call was answered 503 (the
database busy) one to six times in each simulated Summit upgrade measured, and Prefect's client
tried again after ~2 s each time (once 6 s). None of the upgrade's tasks shares a resource that
a tag limit should meter: the parallel CSC work is bounded by the site file's
``csc_parallelism``. A task's own tags (``@task(tags=...)``) still apply.

`run_tags` is entered once per run by `flows.common.upgrade_run`; `section` replaces
``@flow`` for the sections.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, ParamSpec, TypeVar

from prefect import flow
from prefect.context import TagsContext

__all__ = ["run_tags", "section"]

P = ParamSpec("P")
R = TypeVar("R")

#: The run's tags, for its sections; None outside a run (a section called on its own keeps
#: whatever tags its caller gave).
_RUN_TAGS: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar(
    "rubin_upgrade_run_tags", default=None
)


@contextlib.contextmanager
def _tags_exactly(names: Iterable[str]) -> Iterator[None]:
    with TagsContext(current_tags=set(names)):
        yield


@contextlib.contextmanager
def run_tags(names: Iterable[str]) -> Iterator[None]:
    """Within: sections are tagged ``names`` (and the caller's tags); task runs are not."""
    tagged = frozenset(names) | frozenset(TagsContext.get().current_tags)
    token = _RUN_TAGS.set(tagged)
    try:
        with _tags_exactly(()):
            yield
    finally:
        _RUN_TAGS.reset(token)


def section(
    name: str, **options: Any
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """``@flow(name=..., **options)`` for a section: its flow run is created with the run's
    tags, and the task runs in its body get none (see the module docstring)."""

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def body(*args: P.args, **kwargs: P.kwargs) -> R:
            if _RUN_TAGS.get() is None:
                return await fn(*args, **kwargs)
            with _tags_exactly(()):
                return await fn(*args, **kwargs)

        # Prefect reads the parameters' types from the signature and resolves the names in it
        # in the function's module: give it the section's, resolved where it was written.
        body.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
        subflow = flow(name=name, **options)(body)

        @functools.wraps(fn)
        async def call(*args: P.args, **kwargs: P.kwargs) -> R:
            tagged = _RUN_TAGS.get()
            if tagged is None:
                return await subflow(*args, **kwargs)
            # Prefect tags a subflow run with the tags in force where it is called.
            with _tags_exactly(tagged):
                return await subflow(*args, **kwargs)

        return call

    return decorate
