# -*- coding: utf-8 -*-
"""One parked thread for the installed `py-spy dump` (tests/install.rs).

Usage: python install_target.py READY_JSON

Runs unchanged on Python 2.7 and 3.6 to 3.15: ASCII only, no f-strings.

MainThread only (named: `threading` is imported): `<module>` -> `main` -> `park`, which sleeps in `time.sleep` on ONE line
(marker `# HOT park`); the calls carry the markers `# CALL main` and `# CALL park`.
Before parking, `main` writes READY_JSON (a temporary file, then renamed): {"pid",
"version" (platform.python_version()), "executable" (sys.executable)}. The process ends
itself with SIGALRM after 120 s, a safety net for test runs that die without killing it.
"""
import json
import os
import platform
import signal
import sys
import threading  # noqa: F401 (py-spy reads thread names from threading's registry)
import time

sys.dont_write_bytecode = True


def park():
    while True: time.sleep(3600)  # HOT park


def main():
    signal.alarm(120)
    ready_path = sys.argv[1]
    ready = {"pid": os.getpid(), "version": platform.python_version(),
             "executable": sys.executable}
    with open(ready_path + ".tmp", "w") as out:
        json.dump(ready, out)
    os.rename(ready_path + ".tmp", ready_path)
    park()  # CALL park


main()  # CALL main
