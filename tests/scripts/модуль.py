# -*- coding: utf-8 -*-
"""Python 3 only (loaded by dump_target.py): a cyrillic file name holding a function
with a cyrillic name and cyrillic local names.

`функция` parks in `time.sleep` on the line after `announce()` (a one-line loop);
`announce` is injected into this file's globals by dump_target.py.
Python 2.7 loads `модуль_py2.py` instead (2.7 identifiers must be ASCII).
"""
import time


def функция(число, текст, *остальное):
    переменная = "значение"
    announce()  # noqa: F821 (injected)
    while True: time.sleep(3600)
