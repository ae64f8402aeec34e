"""Benchmarks of the clients against the simulated site: ``python -m bench [--quick]``.

Each figure compares one of our clients with a baseline measured in the same run: one line per
figure, ``<figure> <value> <unit> baseline <value> <unit> ratio <x>``, the ratio being
baseline / value (above 1: ours is faster or smaller). The measured code runs in worker
processes of its own (`bench.worker`), so that other work (the broker, the registry, the
simulated CSCs, the set-up) neither shares its event loop nor shows in its peak memory.
"""
