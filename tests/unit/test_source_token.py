"""The source token holder against generated schedules of readers, refusals and time: never a token past its
renewal, one fetch however many readers wait, one renewal per refused token, every token redacted and the
redactor's share of them bounded."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

import core.redact as redaction
from chunking.source_token import REFRESH_MARGIN, SourceToken, Token
from core.redact import TOKENS_KEPT, redact
from core.settings import SourceAuth

AUTH = SourceAuth("oauth2-client-credentials", "http://127.0.0.1:9/token", "client", "secret-value")


@dataclass
class Clock:
    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now


step = st.tuples(
    st.floats(0, 2 * REFRESH_MARGIN),  # seconds that pass before the step
    st.integers(1, 5),  # readers asking at once
    st.booleans(),  # then the source refuses the token they sent (each of them reports it)
    st.one_of(st.none(), st.floats(1, 4 * REFRESH_MARGIN)),  # the lifetime of a token fetched from now on
)


@settings(max_examples=60, deadline=None)
@given(st.lists(step, min_size=1, max_size=12))
def test_readers_get_a_token_in_date_with_one_fetch_at_a_time_and_one_renewal_a_refusal(schedule):
    clock = Clock()
    fetched: list[Token] = []
    lifetime: list[float | None] = [60.0]

    async def fetch() -> Token:
        await asyncio.sleep(0)  # the readers waiting meanwhile must not fetch too
        life = lifetime[0]
        token = Token(f"tok-{len(fetched):04d}-{id(schedule):x}", None if life is None else clock.now + life, clock.now)
        fetched.append(token)
        return token

    async def play() -> None:
        holder = SourceToken(AUTH, clock)
        for passed, readers, refuse, life in schedule:
            clock.now += passed
            lifetime[0] = life if life is not None else lifetime[0]
            before = len(fetched)
            sent = await asyncio.gather(*(holder.current(fetch) for _ in range(readers)))
            assert len(set(sent)) == 1 and len(fetched) - before <= 1
            held = next(token for token in fetched if token.text == sent[0])
            assert clock.now < held.renew_at  # never a token due for renewal
            if refuse:
                before = len(fetched)
                renewed = await asyncio.gather(*(holder.refused(sent[0], fetch) for _ in range(readers)))
                assert len(fetched) == before + 1 and set(renewed) == {fetched[-1].text}
            assert sent[0] not in redact(f"echoed: {sent[0]}")
        assert len([secret for secret in redaction._installed.secrets if secret.startswith("tok-")]) <= TOKENS_KEPT

    asyncio.run(play())


def test_a_token_is_renewed_a_quarter_of_its_life_before_it_ends_at_most_five_minutes():
    assert Token("t", 100.0, 0.0).renew_at == 75.0
    assert Token("t", 7200.0, 0.0).renew_at == 7200.0 - REFRESH_MARGIN
    assert Token("t", None, 0.0).renew_at == float("inf")
