"""What every platform's inbound HTTP and outbound text needs the same way: a request body read up to
a limit and no further, and a text cut into pieces that each fit a platform's limit."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request


class TooLarge(Exception):
    """The body passed the limit (declared, or while it was read)."""


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes ``limit`` bytes (not after it is all in memory)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def split_fitting(text: str, limit: int, fit: Callable[[str, int], int]) -> list[str]:
    """Pieces of ``text`` each within ``limit`` as the platform counts (``fit(text, limit)``: how many
    leading characters fit), cut at the last line break in the second half of what fits, else the
    last space there, else exactly at the limit."""
    pieces: list[str] = []
    rest = text
    while fit(rest, limit) < len(rest):
        n = fit(rest, limit)
        cut = rest.rfind("\n", n // 2, n + 1)  # a break in the latter half, not a stub
        if cut <= 0:
            cut = rest.rfind(" ", n // 2, n + 1)
        if cut <= 0:
            cut = n
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip("\n ")
    if rest or not pieces:
        pieces.append(rest)
    return [p for p in pieces if p] or [""]
