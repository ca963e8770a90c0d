#!/usr/bin/env python3
"""Summarize an Autobahn|Testsuite fuzzingclient report (index.json).

Usage: summarize.py [path/to/index.json]   (default: reports/servers/index.json beside this file)

Prints one FAILED line per failing case, one line listing NON-STRICT cases, and last the
summary line `autobahn: N cases, N ok, N non-strict, N informational, N failed`.
Exits 1 if any case failed or the report has no cases, 2 if it is missing or unreadable.
"""
import json
import os
import sys

# UNIMPLEMENTED (e.g. 12.*/13.* when the deflate offer is refused) is not in here, so it fails.
GOOD_BEHAVIOR = {"OK", "NON-STRICT", "INFORMATIONAL"}
GOOD_CLOSE = {"OK", "INFORMATIONAL"}


def case_key(case_id):
    # "6.4.10" sorts after "6.4.9".
    return tuple(int(p) if p.isdigit() else p for p in case_id.split("."))


def main():
    default = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reports", "servers", "index.json")
    path = sys.argv[1] if len(sys.argv) > 1 else default
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
    except (OSError, ValueError) as e:
        print(f"autobahn: ERROR: cannot read {path}: {e}", file=sys.stderr)
        return 2

    results = []  # (label, result)
    for agent, cases in sorted(index.items()):
        for case_id in sorted(cases, key=case_key):
            # Only one agent ("parley") is expected; name it when there are more.
            label = case_id if len(index) == 1 else f"{agent}:{case_id}"
            results.append((label, cases[case_id]))

    ok = non_strict = informational = failed = 0
    non_strict_ids = []
    for label, r in results:
        behavior, close = r.get("behavior"), r.get("behaviorClose")
        if behavior not in GOOD_BEHAVIOR or close not in GOOD_CLOSE:
            failed += 1
            print(f"FAILED {label} behavior={behavior} behaviorClose={close} "
                  f"remoteCloseCode={r.get('remoteCloseCode')}")
        elif behavior == "OK":
            ok += 1
        elif behavior == "NON-STRICT":
            non_strict += 1
            non_strict_ids.append(label)
        else:
            informational += 1

    if non_strict_ids:
        print(f"non-strict (allowed): {' '.join(non_strict_ids)}")
    print(f"autobahn: {len(results)} cases, {ok} ok, {non_strict} non-strict, "
          f"{informational} informational, {failed} failed")
    if not results:
        print(f"autobahn: ERROR: {path} has no cases", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
