"""Poll ``bus_bus`` for new rows, for sites where LISTEN cannot work.

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

Settling a checkpoint settles every gap up to its ``max_seen``, those of
the checkpoints before it included (their ids are at or below it too).
So while a transaction holds the cluster's xmin (nothing settles), only
the latest ``max_checkpoints`` are kept: the oldest are dropped, and their
gaps settle with the first checkpoint settled once xmin moves on."""

import bisect
import dataclasses
import logging
import operator
import time

_logger = logging.getLogger(__name__)

#: seconds between a checkpoint and the one that proves its gaps settled
SETTLE_MARGIN = 2.0
CHECKPOINT_SPACING = 0.5  # at most two checkpoints a second, however short the interval
#: checkpoints kept at most while xmin does not move (a quarter of an hour
#: at two a second); reaching it logs that xmin is held
MAX_CHECKPOINTS = 1800
MAX_GAPS = 10_000  # ids remembered as gaps at most; beyond, the oldest are forgotten
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

#: who holds xmin: a session or a prepared transaction
XMIN_HOLDER_SQL = """
SELECT 'session pid ' || pid, state, usename, datname,
       extract(epoch FROM clock_timestamp() - xact_start)
  FROM pg_stat_activity WHERE backend_xid::text = %(xid)s
 UNION ALL
SELECT 'prepared transaction ' || quote_literal(gid), 'prepared', owner,
       database, extract(epoch FROM clock_timestamp() - prepared)
  FROM pg_prepared_xacts WHERE transaction::text = %(xid)s"""


def xmin_holder(cursor, xid):
    """What holds the cluster's xmin, or None when this role cannot see it."""
    cursor.execute(XMIN_HOLDER_SQL, {"xid": str(xid)})
    row = cursor.fetchone()
    if row is None:
        return None
    what, state, user, database, age = row
    # without pg_read_all_stats, another role's state and start are hidden
    state = state or "state hidden from this role"
    since = "" if age is None else f", in a transaction for {age:.0f} s"
    return f"{what}: {state}, user {user}, database {database}{since}"


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
        max_checkpoints=MAX_CHECKPOINTS,
    ):
        self.name = name
        self._clock = clock
        self._settle_margin = settle_margin
        self._max_gaps = max_gaps
        self._start_window = start_window
        self._max_checkpoints = max_checkpoints
        self._capped_logged = False
        #: the snapshot xmin last seen, since when, whether we said it is held
        self._xmin, self._xmin_since, self._xmin_held = None, None, False
        self.reset()

    def reset(self):
        self.started = False
        self.database_oid = None
        self.max_seen = 0
        self.floor = 0  # every id <= floor is settled: seen, or never to be committed
        self.gaps = set()
        self._checkpoints = []

    def query(self):
        """(SQL, parameters) of the next poll."""
        if not self.started:
            return START_SQL, {"window": self._start_window}
        return POLL_SQL, {"max_seen": self.max_seen, "gaps": sorted(self.gaps)}

    def poll(self, cursor):
        """Run one poll on ``cursor``; return the channels of new rows (none
        on the first poll, nor after the database was re-created)."""
        started = self._clock()
        cursor.execute(*self.query())
        rows = cursor.fetchall()
        return self.consume(rows, started, holder=lambda xid: xmin_holder(cursor, xid))

    def consume(self, rows, started=None, holder=None):
        """Take the rows of ``query()``; return the new channels. ``holder(xid)``
        describes what holds xmin, for the log (None: what this role cannot see)."""
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
        channels = self._take(rows) if self.started else self._start(rows, database_oid)
        if xmin != self._xmin:
            self._xmin, self._xmin_since = xmin, finished
        started = finished if started is None else started
        checkpoints = self._checkpoints
        # none within CHECKPOINT_SPACING of the last: the next covers this poll's gaps
        if not checkpoints or started - checkpoints[-1].started >= CHECKPOINT_SPACING:
            checkpoints.append(Checkpoint(started, finished, self.max_seen, xmax))
        if not self._settle(xmin) and len(checkpoints) > self._max_checkpoints:
            del checkpoints[0]
            self._report_held_xmin(finished, holder)
        return channels

    def _start(self, rows, database_oid):
        """Find where to start; no channels yet."""
        last_id = rows[0][3]
        self.floor = max(0, last_id - self._start_window)
        self.max_seen = last_id
        self.gaps = set(range(self.floor + 1, last_id + 1)) - {row[4] for row in rows}
        self.database_oid = database_oid
        self.started = True
        return []

    def _take(self, rows):
        channels, new_ids = [], []
        for _xmin, _xmax, _oid, row_id, channel in rows:
            if row_id is not None and row_id > self.max_seen:
                new_ids.append(row_id)
            elif row_id in self.gaps:
                self.gaps.discard(row_id)
            else:
                continue  # no row, or not asked for (a query of another state)
            channels.append(channel)
        if new_ids:
            self._add_gaps(self.max_seen, new_ids)
            self.max_seen = new_ids[-1]
        return channels

    def _add_gaps(self, previous_max, new_ids):
        """The ids after the previous max that did not show are gaps; beyond
        ``max_gaps``, the oldest are forgotten."""
        lowest = max(previous_max + 1, new_ids[-1] - self._max_gaps - len(new_ids))
        self.gaps.update(set(range(lowest, new_ids[-1] + 1)) - set(new_ids))
        if lowest == previous_max + 1 and len(self.gaps) <= self._max_gaps:
            return
        kept = sorted(self.gaps)[-self._max_gaps :]
        self.floor = max(self.floor, (kept[0] - 1) if kept else self.max_seen)
        self.gaps = set(kept)
        if not self._capped_logged:
            self._capped_logged = True
            _logger.warning(
                "bus_alt_connection: more than %d bus.bus ids of database %s are not "
                "committed yet (transactions still open, or rolled back); the oldest "
                "are no longer watched, so a notification committed with one of them "
                "reaches its websockets only with their next notification.",
                self._max_gaps,
                self.name,
            )

    def _settle(self, xmin):
        """Forget the gaps of the checkpoints whose proof ``xmin`` has
        reached; return whether one settled."""
        checkpoints = self._checkpoints
        settled = None
        for index, checkpoint in enumerate(checkpoints):
            proof = bisect.bisect_left(
                checkpoints,
                checkpoint.finished + self._settle_margin,
                lo=index + 1,
                key=operator.attrgetter("started"),
            )
            # xmax only grows: if this checkpoint is not settled, no later is
            if proof == len(checkpoints) or checkpoints[proof].xmax > xmin:
                break
            settled = index
        if settled is None:
            return False
        self.floor = max(self.floor, checkpoints[settled].max_seen)
        self.gaps = {gap for gap in self.gaps if gap > self.floor}
        del checkpoints[: settled + 1]
        if self._xmin_held:
            self._xmin_held = False
            _logger.info(
                "bus_alt_connection: the cluster's xmin moves again; the "
                "bus.bus ids not seen in database %s settle again.",
                self.name,
            )
        return True

    def _report_held_xmin(self, now, holder):
        """Once per stretch: xmin has held the checkpoints at their bound."""
        if self._xmin_held:
            return
        self._xmin_held = True
        xid = self._xmin % 2**32  # without the epoch, as pg_stat_activity has it
        described = None
        try:
            described = holder and holder(xid)
        except Exception as error:  # a diagnosis must not fail the poll
            _logger.debug("bus_alt_connection: xmin holder unknown: %s", error)
        _logger.warning(
            "bus_alt_connection: the cluster's xmin is held: transaction xid %d has "
            "been running for at least %.0f s (%s). Until it ends, the bus poller of "
            "database %s cannot forget the bus.bus ids it has not seen (rolled back, "
            "or still to commit) and keeps only its latest %d checkpoints; no "
            "notification is lost. It holds back vacuum too: end it (a long job, a "
            "session idle in transaction, a forgotten prepared transaction).",
            xid,
            now - self._xmin_since,
            described
            or (
                "not visible to this database role; as a superuser: SELECT pid, "
                f"state, xact_start FROM pg_stat_activity WHERE backend_xid = '{xid}'"
            ),
            self.name,
            self._max_checkpoints,
        )
