"""Texts for WeChat and WeCom: both take a text message of up to 2048 bytes (UTF-8) and refuse (or cut)
a longer one. Text is cut at the last line break in the second half of what fits, else the last
space, else at the limit (never inside a character)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dialogs.i18n import Catalogs
from dialogs.models import Attachment, Button, Reply
from platforms.limits import split_fitting

TEXT_LIMIT = 2000
"""Bytes, below WeChat's 2048 with room for what a client adds."""


def _fit(text: str, limit: int) -> int:
    """The most characters of ``text`` whose UTF-8 fits ``limit`` bytes."""
    used = 0
    for n, ch in enumerate(text):
        used += len(ch.encode())
        if used > limit:
            return n
    return len(text)


def split_bytes(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    return split_fitting(text, limit, _fit)


def language_of(text: str) -> str:
    """``zh`` if the text holds Chinese characters, else ``en``: what the user was answered in (a
    WeChat or WeCom message carries no language of its own)."""
    return "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in text) else "en"


def numbered(catalogs: Catalogs, text: str, choices: tuple[Button, ...]) -> str:
    t = catalogs.get(language_of(text))
    lines = [text, "", t.gettext("Reply with the number of your choice:")]
    lines += [f"{n}. {b.label}" for n, b in enumerate(choices, 1)]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Part:
    """One message to send: a text (with the choices it offers), or a picture."""

    text: str = ""
    choices: tuple[Button, ...] = ()
    image: Attachment | None = None


def compose(
    replies: Sequence[Reply], *, lead: Sequence[str] = (), merge_into_choices: bool = True
) -> list[Part]:
    """The replies as messages: each text cut below the limit, a reply's picture after its text, and
    texts merged into one message where they fit (fewer messages: WeChat counts them in the window,
    WeCom against its per-member limits). ``merge_into_choices``: a text may also be merged into the
    message with choices that follows it (WeChat's menu messages take a long head; WeCom's cards show
    only a short text). ``lead``: texts that come first (a held alert)."""
    out = [Part(text=text) for text in lead]
    for reply in replies:
        pieces = split_bytes(reply.text_with_link())  # a link on its own line: no buttons here
        out += [Part(text=piece) for piece in pieces[:-1]]
        out.append(Part(text=pieces[-1], choices=reply.buttons))
        if reply.attachment is not None:
            out.append(Part(image=reply.attachment))
    merged: list[Part] = []
    for part in out:
        last = merged[-1] if merged else None
        if (
            last is not None
            and not last.choices
            and last.image is None
            and part.image is None
            and (merge_into_choices or not part.choices)
            and len((last.text + "\n\n" + part.text).encode()) <= TEXT_LIMIT
        ):
            merged[-1] = Part(text=last.text + "\n\n" + part.text, choices=part.choices)
        else:
            merged.append(part)
    return [p for p in merged if p.text or p.image is not None]
