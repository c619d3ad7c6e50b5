#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets (fuzz/corpus/<target>/) from the shared wire and
raster vectors (../shared/vectors beside the checkout, or the directory given as argument).
The files are committed; run this again only to rebuild them from changed vectors.

- client_frame: every ClientMsg frame of wire.json.
- server_frame: every ServerMsg frame of wire.json, plus a Welcome with a real 4x3 PNG and a
  WelcomeLz4 with a real LZ4 block, each with pending updates, so the snapshot decoders start
  from valid input.
- op_apply: the ops of raster.json (two bytes of picture size, then the op's bincode), at most
  the first of each case.
"""
import json
import os
import struct
import sys
import zlib

ROOT = os.path.dirname(os.path.abspath(__file__))
VECTORS = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "..", "..", "shared", "vectors")


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def points(ps):
    return u64(len(ps)) + b"".join(struct.pack("<ii", x, y) for x, y in ps)


def op(o):
    """The bincode of an op in the vectors' JSON form (PROTOCOL.md §2)."""
    (kind, v), = o.items()
    if kind == "Pixels":
        return u32(0) + bytes(v["color"]) + points(v["points"])
    if kind == "Rect":
        return u32(1) + struct.pack("<iiII", v["x"], v["y"], v["w"], v["h"]) + bytes(v["color"])
    if kind == "Stroke":
        return u32(2) + bytes(v["color"]) + struct.pack("<H", v["width"]) + points(v["points"])
    if kind == "Patch":
        rgba = bytes.fromhex(v["rgba_hex"])
        return u32(3) + struct.pack("<iiII", v["x"], v["y"], v["w"], v["h"]) + u64(len(rgba)) + rgba
    if kind == "Clear":
        return u32(4) + bytes(v["color"])
    raise ValueError(kind)


def sequenced(seq, client_id, client_seq, o):
    return u64(seq) + u64(client_id) + u64(client_seq) + op(o)


def png(width, height, rgba, seq):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\0" + rgba[y * width * 4:(y + 1) * width * 4] for y in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
            + chunk(b"tEXt", b"seq\0" + str(seq).encode())
            + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def lz4_literals(data):
    """One LZ4 block holding `data` as literals only (a valid block: its last sequence)."""
    n = len(data)
    token = min(n, 15) << 4
    extra = b""
    if n >= 15:
        rest = n - 15
        extra = b"\xff" * (rest // 255) + bytes([rest % 255])
    return bytes([token]) + extra + data


def write(target, name, data):
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    with open(os.path.join(VECTORS, "wire.json")) as f:
        wire = json.load(f)
    for case in wire:
        target = "client_frame" if case["type"] == "ClientMsg" else "server_frame"
        write(target, case["name"], bytes.fromhex(case["bincode_hex"]))

    with open(os.path.join(VECTORS, "raster.json")) as f:
        raster = json.load(f)
    pending_ops = []
    for case in raster:
        seen = set()
        for o in case["ops"][:1]:
            data = bytes([case["width"] - 1, case["height"] - 1]) + op(o)
            if data not in seen:
                seen.add(data)
                write("op_apply", case["name"], data)
        if len(pending_ops) < 6 and case["width"] <= 8:
            pending_ops.append(case["ops"][-1])

    width, height = 4, 3
    rgba = bytes((i * 37) % 256 for i in range(width * height * 4))
    pending = b"".join(sequenced(10 + i, 7, i + 1, o) for i, o in enumerate(pending_ops))
    count = u64(len(pending_ops))
    head = u64(7) + u32(width) + u32(height) + u64(9)
    snapshot = png(width, height, rgba, 9)
    write("server_frame", "welcome_png_4x3", u32(0) + head + u64(len(snapshot)) + snapshot + count + pending)
    block = lz4_literals(rgba)
    write("server_frame", "welcome_lz4_4x3", u32(6) + head + u64(len(block)) + block + count + pending)


if __name__ == "__main__":
    main()
