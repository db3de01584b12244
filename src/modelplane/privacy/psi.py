"""Private set intersection by RSA blind signatures (the scheme FATE's RSA intersection uses).

The signer (guest) holds an RSA key; the requester (host) sends its IDs' full-domain hashes blinded
by r^e, so the signer sees uniformly random numbers. The signer returns the blind signatures and
tags H(FDH(y)^d) of its own IDs; the requester unblinds, tags its own IDs and matches. Only tags of
shared IDs go back to the signer, so both sides learn exactly the intersection and nothing else
about the other side's IDs (beyond the set size).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from modelplane.privacy.errors import MalformedMessage, require
from modelplane.privacy.tls import Channel


def full_domain_hash(identifier: str, n: int) -> int:
    """SHA-256 in counter mode, expanded past the modulus size, reduced mod n."""
    nbytes = (n.bit_length() + 7) // 8 + 16
    out = b""
    counter = 0
    while len(out) < nbytes:
        out += hashlib.sha256(counter.to_bytes(4, "big") + identifier.encode()).digest()
        counter += 1
    return int.from_bytes(out[:nbytes], "big") % n


def tag(signature: int) -> str:
    return hashlib.sha256(signature.to_bytes((signature.bit_length() + 7) // 8 or 1, "big")).hexdigest()


@dataclass
class RsaSigner:
    """The guest's RSA key; signs with CRT through gmpy2."""

    n: int
    e: int
    d: int
    p: int
    q: int

    @staticmethod
    def generate(bits: int = 2048) -> RsaSigner:
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        nums = key.private_numbers()
        return RsaSigner(nums.public_numbers.n, nums.public_numbers.e, nums.d, nums.p, nums.q)

    def sign(self, values: Sequence[int]) -> list[int]:
        gmpy2: Any = require("gmpy2")
        p, q = gmpy2.mpz(self.p), gmpy2.mpz(self.q)
        dp, dq = self.d % (self.p - 1), self.d % (self.q - 1)
        qinv = gmpy2.invert(q, p)
        out = []
        for v in values:
            sp = gmpy2.powmod(v % p, dp, p)
            sq = gmpy2.powmod(v % q, dq, q)
            out.append(int(sq + q * ((sp - sq) * qinv % p)))
        return out

    def own_tags(self, ids: Sequence[str]) -> dict[str, str]:
        """tag -> id for the signer's own IDs."""
        sigs = self.sign([full_domain_hash(i, self.n) for i in ids])
        return {tag(s): i for s, i in zip(sigs, ids, strict=True)}


@dataclass
class BlindRequest:
    """The requester's state between sending blinded IDs and receiving signatures."""

    n: int
    e: int
    ids: list[str]
    blinds: list[int]
    blinded: list[int]

    @staticmethod
    def create(ids: Sequence[str], n: int, e: int) -> BlindRequest:
        gmpy2: Any = require("gmpy2")
        blinds, blinded = [], []
        for i in ids:
            while True:
                r = secrets.randbelow(n - 2) + 2
                if gmpy2.gcd(r, n) == 1:
                    break
            blinds.append(r)
            blinded.append(int(full_domain_hash(i, n) * gmpy2.powmod(r, e, n) % n))
        return BlindRequest(n, e, list(ids), blinds, blinded)

    def unblind_tags(self, signatures: Sequence[int]) -> dict[str, str]:
        """tag -> id for the requester's IDs, from the signer's blind signatures."""
        gmpy2: Any = require("gmpy2")
        out = {}
        for i, r, s in zip(self.ids, self.blinds, signatures, strict=True):
            out[tag(int(s * gmpy2.invert(r, self.n) % self.n))] = i
        return out


def _int_list(message: dict[str, Any], key: str, sender: str, bound: int, count: int | None = None) -> list[int]:
    values = message.get(key)
    if not isinstance(values, list) or (count is not None and len(values) != count) or not all(
        isinstance(v, int) and 0 <= v < bound for v in values
    ):
        raise MalformedMessage(f"{sender} sent a bad {key!r} in {message.get('kind')!r}", field=sender)
    return values


def _expect(channel: Channel, kind: str) -> dict[str, Any]:
    message = channel.recv()
    if message["kind"] != kind:
        raise MalformedMessage(
            f"{channel.peer} sent {message['kind']!r} where {kind!r} was expected", field=channel.peer
        )
    return message


def intersect_as_signer(channel: Channel, ids: Sequence[str], *, bits: int = 2048) -> list[str]:
    """Guest side: returns the shared IDs (sorted)."""
    signer = RsaSigner.generate(bits)
    channel.send({"kind": "psi_rsa_public_key", "n": signer.n, "e": signer.e})
    request = _expect(channel, "psi_blinded_ids")
    blinded = _int_list(request, "values", channel.peer, signer.n)
    own = signer.own_tags(ids)
    own_tags = list(own)
    secrets.SystemRandom().shuffle(own_tags)
    channel.send({"kind": "psi_signatures", "values": signer.sign(blinded), "signer_tags": own_tags})
    reply = _expect(channel, "psi_intersection_tags")
    tags = reply.get("tags")
    if not isinstance(tags, list) or not all(isinstance(t, str) and t in own for t in tags):
        raise MalformedMessage(f"{channel.peer} returned tags that are not ours", field=channel.peer)
    return sorted(own[t] for t in tags)


def intersect_as_requester(channel: Channel, ids: Sequence[str]) -> list[str]:
    """Host side: returns the shared IDs (sorted) and tells the signer which tags matched."""
    key = _expect(channel, "psi_rsa_public_key")
    n, e = key.get("n"), key.get("e")
    if not isinstance(n, int) or not isinstance(e, int) or n < (1 << 1000) or e < 3:
        raise MalformedMessage(f"{channel.peer} sent a weak or malformed RSA key", field=channel.peer)
    request = BlindRequest.create(ids, n, e)
    channel.send({"kind": "psi_blinded_ids", "values": request.blinded})
    reply = _expect(channel, "psi_signatures")
    sigs = _int_list(reply, "values", channel.peer, n, count=len(ids))
    signer_tags = set(reply.get("signer_tags") or [])
    mine = request.unblind_tags(sigs)
    shared = [t for t in mine if t in signer_tags]
    channel.send({"kind": "psi_intersection_tags", "tags": shared})
    return sorted(mine[t] for t in shared)
