"""`record_unsettled.py FIELD CFRAME SECONDS [WINDOW_US]` (CPython 3.11+): a stack that, now and then,
cannot be walked for a moment.

Some 2,000 times a second, for about WINDOW_US (100) microseconds each time (a fifth of
the run),
the pointer through which a profiler finds this thread's newest frame points nowhere
(0x5): `tstate->cframe->current_frame` on 3.11 and 3.12 (FIELD is the offset of
`cframe` in the thread state, CFRAME that of `current_frame` in `_PyCFrame`), else
`tstate->current_frame` (FIELD its offset, CFRAME -1). CPython itself leaves the thread
state pointing at a C frame that is not written yet for some twenty instructions each
time it enters an evaluation loop (3.11, 3.12); here the window is long and frequent
enough to be met in many samples. The pointer is put back before any Python call: the
interpreter only writes it when it calls or returns, and reads it nowhere in between.
"""
import ctypes
import sys
import time


def settled(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:  # HOT settled
        pass


def unsettled(slot, iterations):
    good = slot.value
    slot.value = 5
    i = 0
    while i < iterations:  # BROKEN loop
        i += 1  # BROKEN step
    slot.value = good


def count(iterations):
    i = 0
    while i < iterations:
        i += 1


def main(field, cframe, seconds, window):
    get = ctypes.pythonapi.PyThreadState_Get
    get.restype = ctypes.c_void_p
    address = get() + field
    if cframe >= 0:
        address = ctypes.c_void_p.from_address(address).value + cframe
    slot = ctypes.c_uint64.from_address(address)
    began = time.perf_counter()
    count(200000)  # CALL count
    iterations = max(1, int(200000 * window / (time.perf_counter() - began)))
    end = time.time() + seconds
    while time.time() < end:
        settled(0.0004)  # CALL settled
        unsettled(slot, iterations)  # CALL unsettled


window = float(sys.argv[4]) / 1e6 if len(sys.argv) > 4 else 100e-6
main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), window)  # CALL main
