"""Helpers shared by the Python client tests (see lib.mjs for the environment they read)."""

import os
import sys
import threading
import time

_STARTED = time.monotonic()


class Check(Exception):
    """A mismatch: the script prints it and exits 1."""


def log(msg):
    print(f"[{time.monotonic() - _STARTED:6.2f}s] {msg}", flush=True)


def check(cond, msg):
    if not cond:
        raise Check(msg)


def eq(actual, expected, what):
    if actual != expected:
        raise Check(f"{what}: expected {expected!r}, got {actual!r}")


def env(name):
    value = os.environ.get(name)
    if not value:
        print(f"FAIL: environment variable {name} is not set", file=sys.stderr)
        sys.exit(1)
    return value


def deadline(seconds):
    """Ends the process (pysher's threads included) if the script runs longer than `seconds`."""

    def expire():
        print(f"FAIL: did not finish within {seconds} s", file=sys.stderr, flush=True)
        os._exit(1)

    t = threading.Timer(seconds, expire)
    t.daemon = True
    t.start()


deadline(80)
