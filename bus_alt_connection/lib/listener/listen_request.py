"""One-shot, per-thread requests: "the next ``db_connect('postgres')`` of this
thread is core's LISTEN connection; give it our route".

The glue arms one right before it calls core's bus loop or a cron runner.
When core opens its LISTEN some other way (another addon's ``db_connect``
that does not call the one it replaced), the request is missed: the first
connection goes to another database, or none is asked for within
``TAKE_TIMEOUT``; then ``on_missed(why)`` is called once."""

import threading

from ..route.config import BUS_DATABASE

TAKE_TIMEOUT = 30.0  # core opens its LISTEN connection first thing: ample

_this_thread = threading.local()


class ListenRequest:
    """What core's next LISTEN connection in a thread should use."""

    def __init__(self, payload, on_missed, timeout=TAKE_TIMEOUT):
        self.payload = payload
        self.state = "pending"
        self._on_missed = on_missed
        self._lock = threading.Lock()
        why = f"no connection was asked for within {timeout:g} s"
        self._timer = threading.Timer(timeout, self.settle, ("missed", why))
        self._timer.daemon = True

    def settle(self, state, why=None):
        """Taken, cancelled, or missed (``why``); True the first time only."""
        with self._lock:
            if self.state != "pending":
                return False
            self.state = state
        self._timer.cancel()
        if why is not None:
            self._on_missed(why)
        return True


def arm(kind, request):
    """Give this thread's next LISTEN connection of ``kind`` to ``request``."""
    disarm(kind)
    setattr(_this_thread, kind, request)
    request._timer.start()


def take(kind, to):
    """The pending request's payload if ``to`` is core's LISTEN database;
    a first connection elsewhere means the request was missed."""
    request = getattr(_this_thread, kind, None)
    if request is None:
        return None
    setattr(_this_thread, kind, None)
    if to == BUS_DATABASE and request.settle("taken"):
        return request.payload
    request.settle("missed", f"its first connection went to database {to!r}")
    return None


def disarm(kind, why=None):
    """Drop this thread's pending request; with ``why``, report it missed."""
    request = getattr(_this_thread, kind, None)
    setattr(_this_thread, kind, None)
    if request is not None:
        request.settle("missed" if why else "cancelled", why)
