"""The Put Message request body, byte for byte as azure-storage-queue writes it."""

from __future__ import annotations

import base64
from typing import Literal
from xml.sax.saxutils import escape

MessageEncoding = Literal["base64", "none"]
_HEAD = b"<?xml version='1.0' encoding='utf-8'?>\n<QueueMessage><MessageText>"
_TAIL = b"</MessageText></QueueMessage>"


def message_body(text: str, encoding: MessageEncoding) -> bytes:
    if encoding == "base64":
        return _HEAD + base64.b64encode(text.encode("utf-8")) + _TAIL
    return _HEAD + escape(text).encode("utf-8") + _TAIL
