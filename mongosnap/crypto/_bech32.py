"""Bech32 (BIP 173) as age uses it for keys: no 90-character limit.

Small enough to keep here rather than depend on an unmaintained package;
tests check it against keys the age CLI generates.
"""

from __future__ import annotations

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


class Bech32Error(ValueError):
    """Malformed bech32 text (the message never repeats the text)."""


def _polymod(values: list[int]) -> int:
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for i, generator in enumerate(_GENERATOR):
            if (top >> i) & 1:
                checksum ^= generator
    return checksum


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _regroup(data: bytes | list[int], source: int, target: int, pad: bool) -> list[int]:
    acc = bits = 0
    out: list[int] = []
    for value in data:
        acc = (acc << source) | value
        bits += source
        while bits >= target:
            bits -= target
            out.append((acc >> bits) & ((1 << target) - 1))
    if pad and bits:
        out.append((acc << (target - bits)) & ((1 << target) - 1))
    elif not pad and (bits >= source or (acc << (target - bits)) & ((1 << target) - 1)):
        raise Bech32Error("bech32: non-zero or excess padding bits")
    return out


def encode(hrp: str, data: bytes) -> str:
    """Lower-case bech32 of data under hrp (the caller upper-cases if wanted)."""
    hrp = hrp.lower()
    words = _regroup(data, 8, 5, pad=True)
    polymod = _polymod([*_hrp_expand(hrp), *words, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[w] for w in words + checksum)


def decode(text: str) -> tuple[str, bytes]:
    """(hrp in lower case, data); raises Bech32Error on any malformation."""
    if text.lower() != text and text.upper() != text:
        raise Bech32Error("bech32: mixed case")
    text = text.lower()
    cut = text.rfind("1")
    if cut < 1 or cut + 7 > len(text):
        raise Bech32Error("bech32: separator misplaced")
    hrp, rest = text[:cut], text[cut + 1 :]
    if any(not 33 <= ord(c) <= 126 for c in hrp) or any(c not in _CHARSET for c in rest):
        raise Bech32Error("bech32: invalid character")
    words = [_CHARSET.index(c) for c in rest]
    if _polymod(_hrp_expand(hrp) + words) != 1:
        raise Bech32Error("bech32: bad checksum")
    return hrp, bytes(_regroup(words[:-6], 5, 8, pad=False))
