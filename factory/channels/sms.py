"""SMS length the way carriers count it: GSM-7 septets or UCS-2 code units, in segments.

A message that fits the GSM 03.38 default alphabet is sent in 7-bit encoding: 160
septets in one segment; characters of the extension table (``^{}\\[~]|€`` and form
feed) take an escape septet, so they count twice. Anything outside the alphabet
switches the whole message to UCS-2: 70 UTF-16 code units in one segment (an emoji
outside the BMP is a surrogate pair, two units). Longer messages are split into
concatenated segments of 153 septets / 67 units, because each part carries a
6-byte user data header; an escape sequence or a surrogate pair is never split
across two parts, so a part can hold one unit less than the maximum.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Literal

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

SINGLE_GSM7, PART_GSM7 = 160, 153
SINGLE_UCS2, PART_UCS2 = 70, 67


@dataclass(frozen=True)
class SmsCount:
    encoding: Literal["gsm7", "ucs2"]
    units: int  # septets (gsm7) or UTF-16 code units (ucs2)
    segments: int


def is_gsm7(text: str) -> bool:
    return all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text)


def _unit_sizes(text: str, gsm7: bool) -> list[int]:
    """Each character's size in units; a character is never split across segments."""
    if gsm7:
        return [2 if c in GSM7_EXTENSION else 1 for c in text]
    return [2 if ord(c) > 0xFFFF else 1 for c in text]


def count_sms(text: str) -> SmsCount:
    gsm7 = is_gsm7(text)
    sizes = _unit_sizes(text, gsm7)
    units = sum(sizes)
    single, part = (SINGLE_GSM7, PART_GSM7) if gsm7 else (SINGLE_UCS2, PART_UCS2)
    encoding: Literal["gsm7", "ucs2"] = "gsm7" if gsm7 else "ucs2"
    if units <= single:
        return SmsCount(encoding, units, 1 if units else 0)
    segments, used = 1, 0
    for size in sizes:
        if used + size > part:
            segments, used = segments + 1, 0
        used += size
    return SmsCount(encoding, units, segments)


_LOOKALIKES = {"‘": "'", "’": "'", "‚": "'", "“": '"', "”": '"', "„": '"', "–": "-", "—": "-", "…": "...",
               "\u00a0": " ", "•": "-", "«": '"', "»": '"', "´": "'", "`": "'"}


def smart_encode(text: str) -> str:
    """Replace characters outside GSM-7 by their plain lookalikes (curly quotes, dashes, accents
    the alphabet lacks), as carriers' "smart encoding" does, so one stray character does not
    switch a whole message to UCS-2 and cut its length to 70. Returns the text unchanged when
    something would still be outside GSM-7 (an emoji, a non-Latin script)."""
    if is_gsm7(text):
        return text
    out = []
    for c in text:
        if c in GSM7_BASIC or c in GSM7_EXTENSION:
            out.append(c)
        elif c in _LOOKALIKES:
            out.append(_LOOKALIKES[c])
        else:
            base = "".join(b for b in unicodedata.normalize("NFKD", c) if not unicodedata.combining(b))
            out.append(base)
    result = "".join(out)
    return result if is_gsm7(result) else text
