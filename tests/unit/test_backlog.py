"""The backlog's time-to-live warning: said exactly when the waiting messages would be deleted unread."""

from __future__ import annotations

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
    (first_at, first), (last_at, last) = samples[0], samples[-1]
    lifetime = SERVICE_DEFAULT_TTL if ttl is None else ttl
    if lifetime == -1 or last_at - first_at < 1:
        assert warning is None  # never expires, or too little time between the looks to tell a rate
        return
    rate = (first - last) / (last_at - first_at)
    expected = rate <= 0 or last / rate > lifetime
    assert (warning is not None) == expected, (samples, ttl, warning)
    if warning:
        assert "QUEUE_MESSAGE_TTL" in warning and str(last) in warning


def test_a_look_is_over_when_any_target_queue_is_past_the_limit():
    assert Backlog({"a/q": 10, "b/q": 51}, 50).over
    assert not Backlog({"a/q": 50, "b/q": 0}, 50).over
    assert not Backlog({}, 0).over
