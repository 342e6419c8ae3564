"""Poll databases one after another, waiting for none longer than a bound.

Plain Python. A round polls each database in a poll thread and waits at
most ``bound`` seconds for it; a poll that outlasts the bound (its pool
saturated, its table locked) goes on in its thread while the round moves on
to the next database, and what it returns is handed over by the first
round that finds it done. A database whose poll still runs is not polled
again meanwhile: its tracker is not thread-safe.

The rounds run in one thread (the bus dispatcher); only ``poll_one`` runs
in the poll threads, and they share nothing with the round but the futures.
In Odoo's gevent worker, threads are greenlets; the polls' psycopg2
connections wait cooperatively there.
"""

import concurrent.futures
import dataclasses
import itertools
import logging
import queue
import threading

_logger = logging.getLogger(__name__)

#: seconds a round waits for a database's poll (one indexed query)
POLL_BOUND = 2.0
#: polls running at once at most: the slow ones and the next; each holds a
#: connection of Odoo's pool (64 by default, db_maxconn)
MAX_RUNNING_POLLS = 16


@dataclasses.dataclass
class Round:
    """What the polls that ended since the previous round returned."""

    answered: dict = dataclasses.field(default_factory=dict)  # name: result
    failed: dict = dataclasses.field(default_factory=dict)  # name: exception
    started: int = 0  # polls started in this round


class DaemonThreads:
    """Runs calls in reused daemon threads: a poll stuck on its database must
    not hold up the process's exit (ThreadPoolExecutor joins its threads)."""

    def __init__(self, name):
        self._name = name
        self._work = queue.Queue()
        self._idle = threading.Semaphore(0)
        self._numbers = itertools.count(1)

    def submit(self, function, *args):
        future = concurrent.futures.Future()
        self._work.put((future, function, args))
        if not self._idle.acquire(blocking=False):
            name = f"{self._name}-{next(self._numbers)}"
            threading.Thread(target=self._serve, name=name, daemon=True).start()
        return future

    def _serve(self):
        while True:
            future, function, args = self._work.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(function(*args))
                except BaseException as error:
                    future.set_exception(error)
                    if not isinstance(error, Exception):
                        raise  # the thread is asked to end (exit, greenlet kill)
            self._idle.release()


class BoundedPolls:
    """The poll rounds of one process (the dispatcher's thread calls them)."""

    def __init__(self, poll_one, bound=POLL_BOUND, max_running=MAX_RUNNING_POLLS):
        """:param poll_one: ``poll_one(name)`` polls database ``name`` and
        returns what the round hands over (its channels); may raise."""
        self._poll_one = poll_one
        self._bound = bound
        self._max_running = max_running
        self._threads = DaemonThreads("bus_alt_connection.poll")
        self._running = {}  # name: future
        self._slow = set()  # databases said slow, until one answers in time

    def round(self, names):
        """Poll each of ``names`` not being polled already; return a Round."""
        started = 0
        for name in names:
            if name in self._running or self._busy() >= self._max_running:
                continue
            started += 1
            self._poll_within_bound(name)
        done = self._take_done()
        done.started = started
        return done

    def _busy(self):
        return sum(not future.done() for future in self._running.values())

    def _poll_within_bound(self, name):
        future = self._running[name] = self._threads.submit(self._poll_one, name)
        try:
            error = future.exception(timeout=self._bound)
        except concurrent.futures.TimeoutError:
            self._say_slow(name)
            return
        if error is None:
            self._say_back(name)

    def _take_done(self):
        done = Round()
        for name, future in list(self._running.items()):
            if not future.done():
                continue
            del self._running[name]
            error = future.exception()
            if error is None:
                done.answered[name] = future.result()
            else:
                done.failed[name] = error
        return done

    def _say_slow(self, name):
        if name in self._slow:
            return
        self._slow.add(name)
        _logger.warning(
            "bus_alt_connection: the bus poll of database %s did not answer "
            "within %g s (its connections busy, its pool saturated, bus_bus "
            "locked?); the other databases are polled meanwhile, and its "
            "notifications are delivered once its poll answers.",
            name,
            self._bound,
        )

    def _say_back(self, name):
        if name in self._slow:
            self._slow.discard(name)
            _logger.info(
                "bus_alt_connection: the bus poll of database %s answers "
                "within %g s again.",
                name,
                self._bound,
            )
