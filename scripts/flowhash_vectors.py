#!/usr/bin/env python3
"""Writes pkg/flowhash/testdata/vectors.json: flows and their flow hashes,
computed by this third, independent implementation of bpf/flowhash.h, so the
C and Go versions are each checked against something neither produced."""
import ipaddress
import json
import random
import struct
import sys

SEED = 0x7A3C19E5
M = 0xFFFFFFFF


def rol(w, s):
    return ((w << s) | (w >> (32 - s))) & M


def hash3(a, b, c, initval):
    a = (a + 0xDEADBEEF + 12 + initval) & M
    b = (b + 0xDEADBEEF + 12 + initval) & M
    c = (c + 0xDEADBEEF + 12 + initval) & M
    c ^= b; c = (c - rol(b, 14)) & M
    a ^= c; a = (a - rol(c, 11)) & M
    b ^= a; b = (b - rol(a, 25)) & M
    c ^= b; c = (c - rol(b, 16)) & M
    a ^= c; a = (a - rol(c, 4)) & M
    b ^= a; b = (b - rol(a, 14)) & M
    c ^= b; c = (c - rol(b, 24)) & M
    return c


def word(addr):
    packed = addr.packed
    w = 0
    for i in range(0, len(packed), 4):
        w ^= struct.unpack("<I", packed[i:i + 4])[0]
    return w


def ports(sport, dport):
    return struct.unpack("<I", struct.pack(">HH", sport, dport))[0]


def main():
    rng = random.Random(20261126)
    out = []
    for i in range(64):
        v6 = i % 2 == 1
        if v6:
            src = ipaddress.IPv6Address(bytes([0x20, 0x01, 0x0d, 0xb8]) + rng.randbytes(12))
            dst = ipaddress.IPv6Address("2001:db8:ffff::%x" % rng.randrange(1, 0xffff))
        else:
            src = ipaddress.IPv4Address(bytes([198, 18 + rng.randrange(2)]) + rng.randbytes(2))
            dst = ipaddress.IPv4Address("203.0.113.%d" % rng.randrange(1, 255))
        proto = 6 if i % 4 < 2 else 17
        sport, dport = rng.randrange(1, 65536), rng.choice([80, 443, 53, rng.randrange(1, 65536)])
        out.append({
            "src": str(src), "dst": str(dst), "sport": sport, "dport": dport, "proto": proto,
            "hash": hash3(word(src), word(dst), ports(sport, dport), (SEED + proto) & M),
            "source_hash": hash3(word(src), 0, 0, (SEED + proto) & M),
        })
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
