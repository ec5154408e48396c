"""HTTP content codings: whether a client takes gzip (RFC 9110 12.5.3), and a gzip body
given to one that does not, inflated a piece at a time."""

from __future__ import annotations

import zlib
from collections.abc import Iterator

# bytes of inflated text a piece: a 17 MB page of 20,000 sites' records is never whole
PIECE = 256 << 10


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value (RFC 9110 12.5.3) admits gzip: named with a
    weight above 0, or ``*`` so while gzip is not named; ``gzip;q=0`` refuses it."""
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, *parameters = (part.strip() for part in item.split(";"))
        weight = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0  # a weight nobody can read admits nothing
        if coding:
            weights[coding.lower()] = weight
    gzip = weights.get("gzip", weights.get("x-gzip"))
    if gzip is None:
        gzip = weights.get("*", 0.0)
    return gzip > 0


def inflated(body: bytes, piece: int = PIECE) -> Iterator[bytes]:
    """The text of a gzip ``body`` (one member), at most ``piece`` bytes at a time."""
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    data = body
    while data:
        text = inflate.decompress(data, piece)
        data = inflate.unconsumed_tail
        if text:
            yield text
    if rest := inflate.flush():
        yield rest
