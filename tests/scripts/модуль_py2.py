# -*- coding: utf-8 -*-
"""Python 2.7 counterpart of `модуль.py` (loaded by dump_target.py): a cyrillic file
name, ASCII identifiers (2.7 allows nothing else).

`funktsiya` parks in `time.sleep` on the line after `announce()` (a one-line loop);
`announce` is injected into this file's globals by dump_target.py.
"""
import time


def funktsiya(chislo, tekst, *ostalnoe):
    peremennaya = u"значение"
    announce()  # noqa: F821 (injected)
    while True: time.sleep(3600)
