"""Poll databases one after another, waiting for none longer than a bound.

A round polls each database in a poll thread and waits at most ``bound``
seconds for it; a poll that outlasts the bound (its pool saturated, its
table locked) goes on in its thread while the round moves on, and what it
returns is handed over by the first round that finds it done. A database
whose poll still runs is not polled again meanwhile: its tracker is not
thread-safe. The rounds run in one thread (the bus dispatcher); the poll
threads share nothing with it but the futures. In Odoo's gevent worker,
threads are greenlets; the polls' psycopg2 connections wait cooperatively."""

import concurrent.futures
import itertools
import logging
import queue
import threading

_logger = logging.getLogger(__name__)

POLL_BOUND = 2.0  # seconds a round waits for a database's poll (one indexed query)
#: polls running at once at most: the slow ones and the next; each holds a
#: connection of Odoo's pool (64 by default, db_maxconn)
MAX_RUNNING_POLLS = 16


class BoundedPolls:
    """The poll rounds of one process. Each poll runs in a reused daemon
    thread: one stuck on its database must not hold up the process's exit
    (ThreadPoolExecutor joins its threads)."""

    def __init__(self, poll_one, bound=POLL_BOUND, max_running=MAX_RUNNING_POLLS):
        """:param poll_one: ``poll_one(name)`` polls database ``name`` and
        returns what the round hands over (its channels); may raise."""
        self._poll_one = poll_one
        self._bound = bound
        self._max_running = max_running
        self._running = {}  # name: future
        self._slow = set()  # databases said slow, until one answers in time
        self._work = queue.Queue()  # (future, poll_one, name) for the threads
        self._idle = threading.Semaphore(0)  # threads waiting for work
        self._numbers = itertools.count(1)

    def round(self, names):
        """Poll each of ``names`` not being polled already. Return ``(answered,
        failed, started)``: {name: result} and {name: exception} of the polls
        that ended since the previous round, and how many polls this round started."""
        started = 0
        for name in names:
            busy = sum(not future.done() for future in self._running.values())
            if name not in self._running and busy < self._max_running:
                started += 1
                self._poll_within_bound(name)
        answered, failed = {}, {}
        for name, future in list(self._running.items()):
            if future.done():
                del self._running[name]
                error = future.exception()
                if error is None:
                    answered[name] = future.result()
                else:
                    failed[name] = error
        return answered, failed, started

    def _poll_within_bound(self, name):
        future = self._running[name] = concurrent.futures.Future()
        self._work.put((future, self._poll_one, name))
        if not self._idle.acquire(blocking=False):
            threading.Thread(
                target=self._serve,
                args=(self._work, self._idle),
                name=f"bus_alt_connection.poll-{next(self._numbers)}",
                daemon=True,
            ).start()
        try:
            error = future.exception(timeout=self._bound)
        except concurrent.futures.TimeoutError:
            if name not in self._slow:
                self._slow.add(name)
                _logger.warning(
                    "bus_alt_connection: the bus poll of database %s did not answer "
                    "within %g s (its connections busy, its pool saturated, bus_bus "
                    "locked?); the other databases are polled meanwhile, and its "
                    "notifications are delivered once its poll answers.",
                    name,
                    self._bound,
                )
            return
        if error is None and name in self._slow:
            self._slow.discard(name)
            _logger.info(
                "bus_alt_connection: the bus poll of database %s answers "
                "within %g s again.",
                name,
                self._bound,
            )

    @staticmethod
    def _serve(work, idle):
        """A poll thread's loop; it holds the queue, not the BoundedPolls."""
        while True:
            future, poll_one, name = work.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(poll_one(name))
                except BaseException as error:
                    future.set_exception(error)
                    if not isinstance(error, Exception):
                        raise  # the thread is asked to end (exit, greenlet kill)
            idle.release()
