"""HTTP framing checks for the local API's stdlib server: how long a request body is, decided strictly before reading it.

A lenient `int(header)` takes "-1" (read to the end of the stream), "+5", " 5", "5_0" and other
scripts' digits; two differing Content-Length headers, or one beside Transfer-Encoding, are how
requests are smuggled past a front end. All of them are refused here.
"""

from __future__ import annotations

import re
from email.message import Message

from .errors import ApiError, BadRequest

_LENGTH = re.compile(r"[0-9]{1,18}")


def content_length(headers: Message) -> int:
    """The body's length in bytes (0 without a body); ApiError 400 or 411 for anything else."""
    if headers.get("Transfer-Encoding") is not None:
        raise ApiError("send a Content-Length; chunked and other transfer codings are not supported",
                       status=411, code="length_required")
    values = {value.strip() for value in headers.get_all("Content-Length") or ()}
    if not values:
        return 0
    value = values.pop()
    if values or not _LENGTH.fullmatch(value):
        raise BadRequest("Content-Length must be one non-negative decimal integer")
    return int(value)
