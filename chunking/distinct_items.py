"""How many distinct items a run has read, estimated in 2 KiB whatever their number: a HyperLogLog
sketch (Flajolet et al., 2007) over each item's 64-bit hash, with linear counting for small counts.

Its standard error is about 1.04/sqrt(2,048), 2.3%; below ~5,000 items linear counting is nearly exact.
Adding an item twice changes nothing, so an item read again (a retry, a continuation re-reading its
page) is not counted twice, and the sketch goes with the run (base64 in its record) across
continuations. No library was worth its weight here: datasketch's HyperLogLog needs NumPy and SciPy.
"""

from __future__ import annotations

import base64
import hashlib
import math

_BITS = 11
REGISTERS = 1 << _BITS
_REST = 64 - _BITS
_REST_MASK = (1 << _REST) - 1
_ALPHA = 0.7213 / (1 + 1.079 / REGISTERS)


def item_hash(text: str) -> int:
    """A stable 64-bit hash of an item's text (the same in every process, unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


class DistinctItems:
    def __init__(self, saved: str | None = None) -> None:
        registers = base64.b64decode(saved) if saved else b""
        self._registers = bytearray(registers) if len(registers) == REGISTERS else bytearray(REGISTERS)

    def add(self, digest: int) -> None:
        """Counts the item whose `item_hash` is `digest`."""
        register = digest >> _REST
        rank = _REST + 1 - (digest & _REST_MASK).bit_length()
        if rank > self._registers[register]:
            self._registers[register] = rank

    def estimate(self) -> float:
        zeros = self._registers.count(0)
        if zeros == REGISTERS:
            return 0.0
        raw = _ALPHA * REGISTERS * REGISTERS / sum(2.0**-rank for rank in self._registers)
        if raw <= 2.5 * REGISTERS and zeros:
            return REGISTERS * math.log(REGISTERS / zeros)
        return raw

    def saved(self) -> str:
        """The sketch as it stands, to resume with (`DistinctItems(saved)`)."""
        return base64.b64encode(self._registers).decode("ascii")
