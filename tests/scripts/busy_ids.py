# -*- coding: utf-8 -*-
"""Workload for tests/security.rs and tests/output_safety.rs.

Usage: python busy_ids.py IDS_FILE SECONDS

Writes who it runs as (pid, uid, gid, groups, HOME, USER) to IDS_FILE as JSON, then spins in
`busy` for SECONDS of wall time. Runs unchanged on Python 2.7 and 3.6 to 3.15. The spinning
line carries the marker comment `# BUSY`.
"""
import json
import os
import sys
import time

sys.dont_write_bytecode = True


def busy(seconds):
    end = time.time() + seconds
    while time.time() < end: pass  # BUSY


def main():
    with open(sys.argv[1], "w") as f:
        json.dump(
            {
                "pid": os.getpid(),
                "uid": os.getuid(),
                "gid": os.getgid(),
                "groups": sorted(os.getgroups()),
                "home": os.environ.get("HOME"),
                "user": os.environ.get("USER"),
            },
            f,
        )
    busy(float(sys.argv[2]))


main()
