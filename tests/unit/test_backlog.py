"""The backlog's time-to-live warning: said exactly when the waiting messages would be deleted unread."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from core.contract import SERVICE_DEFAULT_TTL
from ingestion.backlog import Backlog, ttl_warning

LOOKS = st.lists(st.tuples(st.floats(0, 10**6, allow_nan=False), st.integers(0, 10**7)), min_size=2, max_size=20).map(
    sorted
)


@given(samples=LOOKS, ttl=st.one_of(st.none(), st.just(-1), st.integers(1, 10**7)))
def test_a_warning_is_given_exactly_when_the_backlog_would_outlive_its_ttl(samples, ttl):
    warning = ttl_warning(samples, ttl)
    (first_at, _), (last_at, last) = samples[0], samples[-1]
    lifetime = SERVICE_DEFAULT_TTL if ttl is None else ttl
    if lifetime == -1 or last_at - first_at < 1:
        assert warning is None  # never expires, or too little time between the looks to tell a rate
        return
    falls = [(b - a, t - s) for (s, b), (t, a) in itertools.pairwise(samples) if a < b]  # the consumer at work
    rate = sum(fall for fall, _ in falls) / max(sum(span for _, span in falls), 1.0)
    expected = rate <= 0 or last / rate > lifetime
    assert (warning is not None) == expected, (samples, ttl, warning)
    if warning:
        assert "QUEUE_MESSAGE_TTL" in warning and str(last) in warning


def test_a_look_is_over_when_any_target_queue_is_past_the_limit():
    assert Backlog({"a/q": 10, "b/q": 51}, 50).over
    assert not Backlog({"a/q": 50, "b/q": 0}, 50).over
    assert not Backlog({}, 0).over


@given(
    rounds=st.lists(st.tuples(st.integers(51, 10**4), st.floats(0.5, 600)), min_size=1, max_size=10),
    ttl=st.integers(3600, 10**7),
)
def test_a_consumer_that_empties_the_queue_while_the_run_waits_is_never_warned_of(rounds, ttl):
    """The chunk looks over the bound (50) and again when it is back, finding the queue empty; the run refills
    it between rounds: no warning, whatever the run added and however long each wait."""
    samples, now = [], 0.0
    for over, wait in rounds:
        samples += [(now, over), (now + wait, 0)]
        now += wait + 1.0  # sending again, until the next look finds the queue over the bound
    assert ttl_warning(samples, ttl) is None, samples


@given(looks=st.lists(st.tuples(st.floats(0.1, 600), st.integers(0, 100)), min_size=1, max_size=10),
       start=st.integers(51, 10**6))  # fmt: skip
def test_a_consumer_that_takes_nothing_is_warned_of_once_the_looks_span_a_second(looks, start):
    """Nothing leaves the queues from one look to the next (the run only adds): the messages wait for ever."""
    samples, now, count = [(0.0, start)], 0.0, start
    for pause, added in looks:
        now, count = now + pause, count + added
        samples.append((now, count))
    warning = ttl_warning(samples, 7 * 24 * 3600)
    assert (warning is not None) == (now >= 1), samples
