"""Odoo glue of poll mode: core's dispatch, fed by ``bus_bus`` polls.

Instead of core's LISTEN loop, the dispatcher thread polls the loaded databases through
Odoo's own route (``db_host``), holding no connection between polls, and wakes the
websockets of the new rows' channels as core's loop does for a NOTIFY. Each poll runs in
a thread of ``BoundedPolls``: a database that does not answer in time holds up no other.
"""

import json
import logging

import psycopg2

from odoo import sql_db
from odoo.modules.registry import Registry

from odoo.addons.bus.models import bus as core_bus

from ..lib.bounded_polls import BoundedPolls
from ..lib.listener.watch import Probe
from ..lib.polling import BusTracker
from ..lib.route.connection import first_line

_logger = logging.getLogger(__name__)

#: psycopg2/PgBouncer messages of a database that is gone
_DATABASE_GONE = ("does not exist", "no such database")


def polled_databases(channel_map):
    """The databases loaded in this process, with ``bus.bus``, where a
    websocket is subscribed (core keys channels (db, ...))."""
    watched = {
        channel[0]
        for channel, subscribed in list(channel_map.items())
        if isinstance(channel, tuple)
        and channel
        and any(not isinstance(ws, Probe) for ws in subscribed)
    }
    registries = Registry.registries
    loaded = getattr(registries, "snapshot", None)  # 19.0's LRU
    if loaded is None:
        with registries._lock:  # 16.0-18.0: an OrderedDict under the LRU's lock
            loaded = dict(registries.d)
    return [
        name
        for name, registry in loaded.items()
        if name in watched and registry.ready and "bus.bus" in registry
    ]


def wake(websockets):
    """Make websockets read their notifications; the watch's probes excluded."""
    for websocket in set(websockets):
        if not isinstance(websocket, Probe):
            websocket.trigger_notification_dispatching()


def subscribed_to(dispatcher, channels):
    """The websockets subscribed to ``channels`` (JSON, as stored)."""
    channel_map = dispatcher._channels_to_ws
    for text in channels:
        yield from channel_map.get(core_bus.hashable(json.loads(text)), ())


def subscribed_in(dispatcher, db_name=None):
    """Every websocket subscribed to a channel (of ``db_name``, if given)."""
    for channel, subscribed in list(dispatcher._channels_to_ws.items()):
        in_db = isinstance(channel, tuple) and channel[:1] == (db_name,)
        if db_name is None or in_db:
            yield from subscribed


class DispatcherPoller:
    """The poll loop of one process; its trackers outlive failed polls."""

    def __init__(self, dispatcher, listener):
        self.dispatcher = dispatcher
        self.listener = listener
        self.trackers = {}
        self._warned = set()
        self.polls = BoundedPolls(self._poll_database)

    def run(self, on_polling):
        """Poll until Odoo stops or auto mode listens again; raises when a
        poll fails (db_host down)."""
        listener, first = self.listener, True
        while not listener.stop_event.is_set() and listener.mode.active == "poll":
            listener.polled(self.poll_round())
            if first:
                first = False
                on_polling()
            listener.stop_event.wait(listener.settings.poll_interval)
        # listening from now on: a later switch to polling starts afresh
        self.trackers.clear()

    def poll_round(self):
        """Poll the databases a websocket here is subscribed to (an idle site
        costs no query); return how many polls started. A database left out
        loses its tracker: a new subscriber's first poll wakes the database's
        websockets to catch up. A failed poll raises (db_host down) once the
        others are delivered, unless its database is gone."""
        names = polled_databases(self.dispatcher._channels_to_ws)
        for name in set(self.trackers) - set(names):
            del self.trackers[name]  # unwatched, unloaded, or dropped
        for name in set(names) - set(self.trackers):
            self.trackers[name] = BusTracker(name=name)
        answered, failed, started = self.polls.round(names)
        self._deliver(answered)
        for name, error in failed.items():
            if not self._forget_if_gone(name, error):
                raise error
        return started

    def _poll_database(self, name):
        """In a poll thread: (channels, whether the tracker just started)."""
        if (tracker := self.trackers.get(name)) is None:
            return [], False  # dropped meanwhile; a new one starts afresh
        fresh = not tracker.started
        with sql_db.db_connect(name).cursor() as cr:
            channels = tracker.poll(cr)
        return channels, fresh and tracker.started

    def _deliver(self, answered):
        """Wake the websockets of what the polls that ended returned."""
        channels = []
        for name, (polled, started) in answered.items():
            self._warned.discard(name)
            channels += polled
            if started:
                # rows committed before the tracker started: its websockets catch up
                wake(subscribed_in(self.dispatcher, name))
        wake(subscribed_to(self.dispatcher, channels))

    def _forget_if_gone(self, name, error):
        """A dropped database, or one without bus_bus: not a db_host failure."""
        gone = isinstance(error, psycopg2.Error) and any(
            words in str(error).lower() for words in _DATABASE_GONE
        )
        if not (gone or isinstance(error, psycopg2.errors.UndefinedTable)):
            return False
        self.trackers.pop(name, None)
        if name not in self._warned:
            self._warned.add(name)
            _logger.warning(
                "bus_alt_connection: database %s cannot be polled (%s); "
                "skipping it while this lasts.",
                name,
                first_line(error),
            )
        return True
