"""Callback XML in and out, safely.

In: ``parse`` reads at most ``MAX_BODY`` bytes through defusedxml, which refuses a DTD, an entity
declaration or an external reference outright (an "XML bomb" is refused before anything expands),
and gives the root's children: leaves as text in ``fields``, the whole tree in ``root`` for the
events that nest (``SubscribeMsgPopupEvent``). Anything else (malformed, not ``<xml>``) raises
``BadXml``; callers answer ``success`` and log the kind, never the body.

Out: ``element`` writes ``<xml>`` with each text value as CDATA (a ``]]>`` inside is split across
two sections) and characters XML 1.0 cannot hold removed.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

MAX_BODY = 64 * 1024
"""A callback is a few hundred bytes; WeChat's largest events are a few KiB."""

_NOT_XML_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class BadXml(Exception):
    """Not a callback message: ``kind`` says why (``too_large``, ``forbidden``, ``malformed``)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class XmlMessage:
    fields: dict[str, str]
    root: ET.Element

    def get(self, name: str, default: str = "") -> str:
        return self.fields.get(name, default)


def parse(body: bytes) -> XmlMessage:
    if len(body) > MAX_BODY:
        raise BadXml("too_large")
    try:
        root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise BadXml("forbidden") from None
    except (ET.ParseError, ValueError, RecursionError):
        raise BadXml("malformed") from None
    if root.tag != "xml":
        raise BadXml("malformed")
    fields = {child.tag: (child.text or "").strip() for child in root if len(child) == 0}
    return XmlMessage(fields, root)


def clean(text: str) -> str:
    return _NOT_XML_CHARS.sub("", text)


def _cdata(value: str) -> str:
    return "<![CDATA[" + clean(value).replace("]]>", "]]]]><![CDATA[>") + "]]>"


def element(values: dict[str, str | int]) -> bytes:
    """``<xml>`` with one child per item: ints as numbers, strings as CDATA."""
    parts = ["<xml>"]
    for name, value in values.items():
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            raise ValueError(f"not an element name: {name!r}")
        inner = str(value) if isinstance(value, int) else _cdata(value)
        parts.append(f"<{name}>{inner}</{name}>")
    parts.append("</xml>")
    return "".join(parts).encode()
