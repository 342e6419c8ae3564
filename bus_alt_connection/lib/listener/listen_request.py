"""One-shot, per-thread requests for core's LISTEN connections.

Plain Python. Right before the Odoo glue calls core's bus loop or a cron
runner, it arms a request in that thread (a greenlet in the gevent worker):
"the next ``db_connect('postgres')`` of this thread is core's LISTEN
connection". The glue's ``db_connect`` wrapper takes it on that call and
hands core a connection on our route; every other connection of the thread
is left alone.

When core opens its LISTEN some other way (another addon wraps
``db_connect`` without calling the one it replaced, a core that connects
differently), the request is missed: the thread's first connection goes to
another database, the runner ends without connecting, or nothing asks for
a connection within ``TAKE_TIMEOUT`` seconds. Then ``on_missed(why)`` is
called, once per request, so that the glue can say the route is not in use.
"""

import threading

from ..route.config import BUS_DATABASE

#: Core opens its LISTEN connection first thing; this is ample.
TAKE_TIMEOUT = 30.0

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
    """The pending request's payload if ``to`` is core's LISTEN database.

    Any call settles the request: a connection to another database first
    means core opened its LISTEN some other way.
    """
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
