"""Decode a recorded event stream with Salt's own Python event code, the way a 3007 event
subscriber does: salt.utils.msgpack.Unpacker over 64 KiB reads, then SaltEvent.unpack(body)
(which is salt.payload.loads of the data). Prints one JSON line per stream file: the best wall
time and the best CPU time of the thread (time.thread_time) over the rounds.

Usage: python salt_decode.py ROUNDS FILE...
"""
import json
import sys
import time

import salt.utils.event
import salt.utils.msgpack

CHUNK = 64 * 1024


def decode(stream):
    unpacker = salt.utils.msgpack.Unpacker()
    events = 0
    for off in range(0, len(stream), CHUNK):
        unpacker.feed(stream[off : off + CHUNK])
        for msg in unpacker:
            tag, data = salt.utils.event.SaltEvent.unpack(msg[b"body"])
            events += 1
    return events


rounds = int(sys.argv[1])
for path in sys.argv[2:]:
    with open(path, "rb") as f:
        stream = f.read()
    best = best_cpu = None
    for _ in range(rounds):
        c0 = time.thread_time()
        t0 = time.perf_counter()
        events = decode(stream)
        dt = time.perf_counter() - t0
        dc = time.thread_time() - c0
        best = dt if best is None or dt < best else best
        best_cpu = dc if best_cpu is None or dc < best_cpu else best_cpu
    print(json.dumps({"file": path, "events": events, "bytes": len(stream), "seconds": best,
                      "cpu_seconds": best_cpu}))
    sys.stdout.flush()
