"""How many Put Messages one queue gets at once: additive increase, multiplicative decrease on 503.

A queue takes 2,000 messages/s and an account 20,000 requests/s; past that storage answers 503
ServerBusy. A sender that keeps its whole window sending into a limit has most sends answered 503 and
asleep in backoff (a second, against milliseconds for a Put Message), and runs far below the limit. So
a 503 cuts the sends allowed in flight to its queue to DECREASE of them, once a round trip (the sends
already out carry the same news), and each 201 adds 1/allowed, about one more a round trip, up to
`most` (the account's connection pool); any other answer or failure changes nothing. The sends in
flight settle near limit x latency, where the queue runs at its limit with few 503s. A send asleep in
backoff holds no slot, and a send answered 503 goes again at once, in its turn, while the pace allows
more than one send at a time (putmessage/sender.py, at most PACED_RETRIES times a message): a sleep of
seconds would hold back every checkpoint behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

DECREASE = 0.7  # of the sends allowed, after a 503: the sawtooth averages about 0.85 of the limit, 0.75 at 0.5


class SendPace:
    def __init__(self, most: int) -> None:
        self.most = most
        self.allowed = float(most)
        self.in_flight = 0
        self._epoch = 0  # advances at each decrease: a 503 to a send started before it is old news
        self._waiting: deque[asyncio.Future[int]] = deque()

    def take(self) -> int | None:
        """A slot now, if one is free and nobody waits for one: the epoch to give `done`; else None."""
        if self.in_flight >= self.sends_at_once or self._waiting:
            return None
        self.in_flight += 1
        return self._epoch

    async def wait(self) -> int:
        """Waits for a slot (first come, first served); returns the epoch it was handed in, to give `done`."""
        handed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append(handed)
        self._hand_over()  # a slot may be free already
        try:
            return await handed
        except asyncio.CancelledError:
            if handed.done() and not handed.cancelled():  # handed a slot, then cancelled: pass it on
                self.in_flight -= 1
                self._hand_over()
            else:
                with contextlib.suppress(ValueError):  # already dropped by a hand-over
                    self._waiting.remove(handed)
            raise

    @property
    def sends_at_once(self) -> int:
        return int(self.allowed)

    def done(self, epoch: int, *, stored: bool = False, throttled: bool = False) -> None:
        """A send is over: `stored` (201), `throttled` (503), or neither (another answer, a failure, a cancel)."""
        self.in_flight -= 1
        if throttled:
            if epoch == self._epoch:
                self.allowed = max(1.0, self.allowed * DECREASE)
                self._epoch += 1
        elif stored and self.allowed < self.most:
            self.allowed = min(float(self.most), self.allowed + 1.0 / self.allowed)
        self._hand_over()

    async def close(self) -> None:
        """Nothing to release: kept with the storage clients (core/storage.py), it goes with them."""

    def _hand_over(self) -> None:
        while self._waiting and self.in_flight < self.sends_at_once:
            handed = self._waiting.popleft()
            if not handed.done():  # a cancelled waiter: dropped here
                self.in_flight += 1
                handed.set_result(self._epoch)
