"""Klaviyo-looking identifiers derived from record indexes, so the big tables never store their ids.

Every codec is a bijection (index -> id) keyed by a salt, so ids look random, are unique by
construction, and the same seed always yields the same ids. Codecs whose ids must be looked up
(`Base62`, `Ulid`, `Numeric`) can also map an id back to its index.
"""

from __future__ import annotations

import binascii
from math import gcd

MASK64 = (1 << 64) - 1
_MASK160 = (1 << 160) - 1
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CROCKFORD_VALUE = {c: i for i, c in enumerate(_CROCKFORD)}
# Crockford base32 ten bits at a time: a table lookup per two characters keeps encoding cheap.
_CROCKFORD_PAIRS = [_CROCKFORD[i >> 5] + _CROCKFORD[i & 31] for i in range(1024)]
_ULID_SHIFTS = tuple(range(120, -1, -10))
_EVENT_MUL = (0x8CB92BA72F3D8DD7D1B54A32D192ED03 << 32) | 0x9E3779B1
_EVENT_ADD = 0x5851F42D4C957F2D14057B7EF767814F3C6EF372
_URLSAFE = bytes.maketrans(b"+/", b"-_")
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BASE62_VALUE = {c: i for i, c in enumerate(_BASE62)}


def mix64(x: int, salt: int = 0) -> int:
    """A 64-bit bijective mixer (xor-shift-multiply); also the project's deterministic hash."""
    x = (x ^ (salt * 0x9E3779B97F4A7C15)) & MASK64
    x ^= x >> 31
    x = (x * 0x7FB5D329728EA185) & MASK64
    x ^= x >> 27
    x = (x * 0x81DADEF4BC2DD44D) & MASK64
    return x ^ (x >> 33)


class Affine:
    """i -> (a*i + b) mod m with gcd(a, m) == 1: a cheap keyed permutation of range(m)."""

    def __init__(self, modulus: int, salt: int) -> None:
        self.m = modulus
        a = mix64(salt, 1) % modulus | 1
        while gcd(a, modulus) != 1:
            a += 2
        self.a = a
        self.b = mix64(salt, 2) % modulus
        self.a_inv = pow(a, -1, modulus)

    def enc(self, i: int) -> int:
        return (self.a * i + self.b) % self.m

    def dec(self, v: int) -> int:
        return ((v - self.b) * self.a_inv) % self.m


class Base62:
    """Fixed-width base62 ids like Klaviyo's metric, list, segment and template ids (`UVbKcZ`)."""

    def __init__(self, salt: int, width: int = 6) -> None:
        self.width = width
        self.perm = Affine(62**width, salt)

    def encode(self, i: int) -> str:
        v = self.perm.enc(i)
        out = []
        for _ in range(self.width):
            v, r = divmod(v, 62)
            out.append(_BASE62[r])
        return "".join(reversed(out))

    def index(self, text: str) -> int | None:
        if len(text) != self.width:
            return None
        v = 0
        for c in text:
            d = _BASE62_VALUE.get(c)
            if d is None:
                return None
            v = v * 62 + d
        return self.perm.dec(v)


class Ulid:
    """26-char ULIDs (`01J...`): 48-bit millisecond time, then 80 bits holding a permuted index.

    The time part comes from the record's creation time, so ids sort roughly by creation like real
    ULIDs. `index` only recovers a candidate index; callers confirm with `encode`.
    """

    def __init__(self, salt: int) -> None:
        self.salt = salt
        self.perm = Affine(1 << 40, salt)

    def encode(self, i: int, millis: int) -> str:
        rand = (self.perm.enc(i) << 40) | (mix64(i, self.salt) & ((1 << 40) - 1))
        value = ((millis & ((1 << 48) - 1)) << 80) | rand
        return "".join([_CROCKFORD_PAIRS[(value >> s) & 1023] for s in _ULID_SHIFTS])

    def index(self, text: str) -> int | None:
        if len(text) != 26:
            return None
        value = 0
        for c in text:
            d = _CROCKFORD_VALUE.get(c)
            if d is None:
                return None
            value = (value << 5) | d
        return self.perm.dec((value >> 40) & ((1 << 40) - 1))


class Numeric:
    """Numeric-string ids of a fixed digit count (flow actions and flow messages)."""

    def __init__(self, salt: int, digits: int = 8) -> None:
        self.low = 10 ** (digits - 1)
        self.perm = Affine(9 * self.low, salt)

    def encode(self, i: int) -> str:
        return str(self.low + self.perm.enc(i))

    def index(self, text: str) -> int | None:
        if not text.isdigit() or not self.low <= int(text) < 10 * self.low:
            return None
        return self.perm.dec(int(text) - self.low)


def event_id(i: int, salt: int) -> str:
    """27-char url-safe event id: an odd multiply plus an xor-shift on 160 bits, both bijective.

    Deliberately cheap (no per-call hashing): a page of 1000 events renders 1000 of these.
    """
    v = (i * _EVENT_MUL + (salt + 1) * _EVENT_ADD) & _MASK160
    v ^= v >> 79
    return binascii.b2a_base64(v.to_bytes(20, "big"), newline=False)[:27].translate(_URLSAFE).decode()


def uuid_like(i: int, salt: int) -> str:
    """A version-4-looking UUID whose last 48 bits are a bijection of `i` (tags, tag groups)."""
    head = mix64(i, salt)
    tail = Affine(1 << 48, salt).enc(i)
    h = f"{head:016x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{8 | (head & 3):x}{(head >> 2) & 0xFFF:03x}-{tail:012x}"


def code32(i: int, salt: int, width: int = 8) -> str:
    """An unambiguous upper-case code (no 0/O, 1/I) for coupon codes; unique for i < 32**width."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    v = Affine(32**width, salt).enc(i)
    out = []
    for _ in range(width):
        v, r = divmod(v, 32)
        out.append(alphabet[r])
    return "".join(out)
