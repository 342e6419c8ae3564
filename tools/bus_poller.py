"""A psycopg2 poller of one database's ``bus_bus``, for benchmarks and tests.

The addon polls through Odoo's own cursors (``patches/bus_polling.py``);
this drives the same ``BusTracker`` from a plain psycopg2 connection, as a
benchmark script or a test does without Odoo.
"""

from bus_alt_connection.lib.polling import BusTracker


class BusPoller:
    """Polls one database with psycopg2, outside Odoo.

    The connection is in autocommit: each poll is one transaction, so that
    a transaction-mode pooler hands the server connection back at once.
    """

    def __init__(self, connect, name="", **tracker_options):
        """:param connect: returns a new psycopg2 connection to the database"""
        self._connect = connect
        self._connection = None
        self.tracker = BusTracker(name=name, **tracker_options)

    def poll(self):
        """Channels (JSON text, as stored) of the rows committed since the
        previous poll; nothing on the first poll."""
        if self._connection is None or self._connection.closed:
            self._connection = self._connect()
            self._connection.autocommit = True
        try:
            with self._connection.cursor() as cursor:
                return self.tracker.poll(cursor)
        except Exception:
            self.close()
            raise

    def close(self):
        if self._connection is not None:
            self._connection.close()
            self._connection = None
