#!/usr/bin/env python3
"""One parley-bots --json result as a table row's fields for bench/fallback.sh and
bench/socketio.sh: server CPU µs per delivery, deliveries/s, p50 and p99 (ms), errors.

A run that produced no result (the server did not start, the bots timed out) prints
`9e9 - - - failed`: it sorts last among the repetitions, and the scripts show its CPU as `-`.
"""
import json
import sys

try:
    d = json.loads(sys.argv[1])
    m, s, l = d["messages"], d["server"], d["latency_us"]
    cpu_us = s["cpu_s"] * 1e6 / max(m["delivered"], 1)
    rate, p50, p99 = m["delivered_per_s"], l["p50"] / 1000, l["p99"] / 1000
    print(f"{cpu_us:.2f} {rate:.0f} {p50:.1f} {p99:.1f} {d['errors']['total']}")
except (IndexError, KeyError, TypeError, ValueError):
    print("9e9 - - - failed")
