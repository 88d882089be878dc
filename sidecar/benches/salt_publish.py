"""Publish round trips with Salt's own Python LocalClient: `cmd` of test.ping to a list of
minions, publish to last return. Prints a JSON list of seconds.

Usage: python salt_publish.py MASTER_CONFIG MINIONS(comma-separated) RUNS
"""
import json
import sys
import time

import salt.client

conf, minions, runs = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
client = salt.client.LocalClient(c_path=conf)
times = []
for i in range(runs + 5):
    t0 = time.perf_counter()
    ret = client.cmd(minions, "test.ping", tgt_type="list", timeout=30)
    dt = time.perf_counter() - t0
    if len(ret) != len(minions):
        print(f"run {i}: only {sorted(ret)} returned", file=sys.stderr)
    if i >= 5:  # warm-up
        times.append(dt)
print(json.dumps(times))
