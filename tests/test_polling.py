"""Waits poll soon at first, then back off to the site's interval."""

from __future__ import annotations

import itertools

from clients.polling import poll_delays


def test_delays_start_short_and_double_up_to_the_interval() -> None:
    assert list(itertools.islice(poll_delays(2.0), 7)) == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0]
    # An interval shorter than the first delay is kept from the start.
    assert list(itertools.islice(poll_delays(0.1), 3)) == [0.1, 0.1, 0.1]
    # A long wait costs only a few requests more than polling at the interval.
    delays = poll_delays(10.0)
    polls, waited = 0, 0.0
    while waited < 600:
        waited += next(delays)
        polls += 1
    assert polls <= 600 / 10 + 6
