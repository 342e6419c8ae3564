"""Poll ``bus_bus`` for new rows, for sites where LISTEN cannot work.

Plain Python (a DB-API cursor is passed in; no Odoo import), so the Odoo
glue, the check, the tests and the benchmarks share it.

Each poll is one short indexed query. A sequence id is taken before the
inserting transaction commits, so id 10 may commit after id 11: the tracker
remembers the ids it has not seen below the highest one it has seen
(``gaps``: still in flight, or rolled back) and asks for them again, until
it can prove that no transaction that may still insert them is running.

That proof: a gap id at or below the ``max_seen`` of a checkpoint P was
taken before P's snapshot. Its transaction has an xid at the latest a
moment later (``nextval`` runs just before the INSERT writes, which assigns
the xid), hence below the snapshot ``xmax`` of a checkpoint P' taken
``settle_margin`` seconds after P. Once a poll's snapshot ``xmin`` reaches
that ``xmax``, the transaction has ended: committed, its row was in that
very poll; otherwise it never will be. This assumes the default ``CACHE 1``
of Odoo's ``bus_bus_id_seq`` (ids handed out in time order).
"""

import dataclasses
import logging
import time

_logger = logging.getLogger(__name__)

#: seconds between a checkpoint and the one that proves its gaps settled
SETTLE_MARGIN = 2.0
#: at most two checkpoints a second, however short the interval
CHECKPOINT_SPACING = 0.5
#: ids remembered as gaps at most; beyond, the oldest are forgotten
MAX_GAPS = 10_000
#: at start, ids this far below the sequence's last value that are not
#: committed yet are treated as gaps (transactions in flight at start)
START_WINDOW = 1000

_SNAPSHOT_SQL = """
SELECT txid_snapshot_xmin(t) AS xmin, txid_snapshot_xmax(t) AS xmax,
       (SELECT oid FROM pg_database WHERE datname = current_database()) AS db_oid
  FROM txid_current_snapshot() t"""

#: the snapshot, the database, the last id handed out, the ids committed
#: just below it (a row with NULL id when there is none)
START_SQL = f"""
SELECT s.xmin, s.xmax, s.db_oid, s.last_id, b.id
  FROM (SELECT snap.*,
               COALESCE(pg_sequence_last_value(
                   pg_get_serial_sequence('bus_bus', 'id')::regclass), 0) AS last_id
          FROM ({_SNAPSHOT_SQL}) snap) s
  LEFT JOIN bus_bus b ON b.id > s.last_id - %(window)s AND b.id <= s.last_id
 ORDER BY b.id"""

#: the snapshot, the database, and the rows not seen yet (NULL id if none)
POLL_SQL = f"""
SELECT s.xmin, s.xmax, s.db_oid, b.id, b.channel
  FROM ({_SNAPSHOT_SQL}) s
  LEFT JOIN bus_bus b ON b.id > %(max_seen)s OR b.id = ANY(%(gaps)s::int[])
 ORDER BY b.id"""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    started: float  # before the query: the snapshot is not older
    finished: float  # after it: the snapshot is not younger
    max_seen: int
    xmax: int


class BusTracker:
    """What one database's ``bus_bus`` has shown so far."""

    def __init__(
        self,
        name="",
        clock=time.monotonic,
        settle_margin=SETTLE_MARGIN,
        max_gaps=MAX_GAPS,
        start_window=START_WINDOW,
    ):
        self.name = name
        self._clock = clock
        self._settle_margin = settle_margin
        self._max_gaps = max_gaps
        self._start_window = start_window
        self._capped_logged = False
        self.reset()

    def reset(self):
        self.started = False
        self.database_oid = None
        self.max_seen = 0
        #: every id <= floor is settled: seen, or never to be committed
        self.floor = 0
        self.gaps = set()
        self._checkpoints = []

    def query(self):
        """(SQL, parameters) of the next poll."""
        if not self.started:
            return START_SQL, {"window": self._start_window}
        return POLL_SQL, {"max_seen": self.max_seen, "gaps": sorted(self.gaps)}

    def poll(self, cursor):
        """Run one poll on ``cursor``; return the channels of new rows.

        The first poll (and the first after the database was re-created)
        only finds where to start and returns nothing.
        """
        started = self._clock()
        cursor.execute(*self.query())
        return self.consume(cursor.fetchall(), started)

    def consume(self, rows, started=None):
        """The rows of the query ``query()`` gave; return the new channels."""
        finished = self._clock()
        xmin, xmax, database_oid = rows[0][:3]
        if self.started and database_oid != self.database_oid:
            _logger.info(
                "bus_alt_connection: database %s was re-created; polling its "
                "bus from its current last id.",
                self.name,
            )
            self.reset()
            return []
        if self.started:
            channels = self._take(rows)
        else:
            self._start(rows, database_oid)
            channels = []
        self._checkpoint(started if started is not None else finished, finished, xmax)
        self._settle(xmin)
        return channels

    def _start(self, rows, database_oid):
        last_id = rows[0][3]
        committed = {row[4] for row in rows if row[4] is not None}
        self.floor = max(0, last_id - self._start_window)
        self.max_seen = last_id
        self.gaps = set(range(self.floor + 1, last_id + 1)) - committed
        self.database_oid = database_oid
        self.started = True

    def _take(self, rows):
        channels, new_ids = [], []
        for row in rows:
            row_id, channel = row[3], row[4]
            if row_id is None:
                continue
            if row_id > self.max_seen:
                new_ids.append(row_id)
            elif row_id in self.gaps:
                self.gaps.discard(row_id)
            else:
                continue  # not asked for; a query of another tracker state
            channels.append(channel)
        if new_ids:
            self._add_gaps(self.max_seen, new_ids)
            self.max_seen = new_ids[-1]
        return channels

    def _add_gaps(self, previous_max, new_ids):
        """Ids between the previous max and the new rows that did not show."""
        lowest = max(previous_max + 1, new_ids[-1] - self._max_gaps - len(new_ids))
        self.gaps.update(set(range(lowest, new_ids[-1] + 1)) - set(new_ids))
        if lowest > previous_max + 1 or len(self.gaps) > self._max_gaps:
            self._cap_gaps()

    def _cap_gaps(self):
        kept = sorted(self.gaps)[-self._max_gaps :]
        self.floor = max(self.floor, (kept[0] - 1) if kept else self.max_seen)
        self.gaps = set(kept)
        if not self._capped_logged:
            self._capped_logged = True
            _logger.warning(
                "bus_alt_connection: more than %d bus.bus ids of database %s "
                "are not committed yet (transactions still open, or rolled "
                "back); the oldest are no longer watched, so a notification "
                "committed with one of them reaches its websockets only "
                "with their next notification.",
                self._max_gaps,
                self.name,
            )

    def _checkpoint(self, started, finished, xmax):
        checkpoints = self._checkpoints
        if checkpoints and started - checkpoints[-1].started < CHECKPOINT_SPACING:
            return  # the next checkpoint covers this poll's gaps
        checkpoints.append(Checkpoint(started, finished, self.max_seen, xmax))

    def _settle(self, xmin):
        """Forget the gaps no running transaction can still fill."""
        checkpoints = self._checkpoints
        settled = None
        for index, checkpoint in enumerate(checkpoints):
            proof = next(
                (
                    later
                    for later in checkpoints[index + 1 :]
                    if later.started >= checkpoint.finished + self._settle_margin
                ),
                None,
            )
            # xmax only grows: if this checkpoint is not settled, no later is
            if proof is None or proof.xmax > xmin:
                break
            settled = index
        if settled is None:
            return
        self.floor = max(self.floor, checkpoints[settled].max_seen)
        self.gaps = {gap for gap in self.gaps if gap > self.floor}
        del checkpoints[: settled + 1]
