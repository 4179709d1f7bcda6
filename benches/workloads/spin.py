"""Spin target for benches/versus_py_spy.rs.

Usage: python spin.py THREADS DEPTH

Starts THREADS threads in all (the main thread is one of them), each of which recurses
until its stack is DEPTH Python frames deep, counting the frames below it too, then spins
in pure Python until killed. When every thread is at depth it prints "ready" on stdout.
"""
import sys
import threading


def depth_here():
    frame = sys._getframe(1)
    n = 0
    while frame is not None:
        n += 1
        frame = frame.f_back
    return n


def spin():
    x = 0
    while True:
        x += 1


def descend(target, ready):
    # The frame of spin() is the last of the DEPTH.
    if depth_here() < target - 1:
        descend(target, ready)
        return
    ready.release()
    spin()


def main():
    threads = int(sys.argv[1])
    depth = int(sys.argv[2])
    ready = threading.Semaphore(0)
    for _ in range(threads - 1):
        t = threading.Thread(target=descend, args=(depth, ready))
        t.daemon = True
        t.start()
    for _ in range(threads - 1):
        ready.acquire()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    descend(depth, threading.Semaphore(0))


main()
