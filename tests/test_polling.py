"""The bus poller: pure tracker logic, then on PostgreSQL through PgBouncer."""

import collections
import contextlib
import json
import logging
import random
import re
import threading
import time
import uuid

import psycopg2
import pytest

from bus_alt_connection.lib.bounded_polls import BoundedPolls
from bus_alt_connection.lib.polling import POLL_SQL, SETTLE_MARGIN, BusTracker
from tools.bus_poller import BusPoller

DB_OID = 16384
OTHER_OID = 16999


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def start_rows(last_id, committed, xmin=50, xmax=50, oid=DB_OID):
    """What START_SQL returns."""
    ids = sorted(committed) or [None]
    return [(xmin, xmax, oid, last_id, row_id) for row_id in ids]


def poll_rows(ids, xmin=50, xmax=50, oid=DB_OID):
    """What POLL_SQL returns; the channel names the id."""
    ids = sorted(ids) or [None]
    return [(xmin, xmax, oid, row_id, channel_of(row_id)) for row_id in ids]


def channel_of(row_id):
    return None if row_id is None else json.dumps(["db", f"c{row_id}"])


def tracker(clock=None, **options):
    options.setdefault("start_window", 5)
    options.setdefault("settle_margin", 2.0)
    return BusTracker(name="db", clock=clock or Clock(), **options)


def test_first_poll_finds_where_to_start_and_reports_nothing():
    bus = tracker()
    sql, params = bus.query()
    assert "pg_sequence_last_value" in sql and params == {"window": 5}
    assert bus.consume(start_rows(10, [8, 9, 10])) == []
    assert (bus.started, bus.max_seen, bus.floor) == (True, 10, 5)
    # 6 and 7 were handed out but not committed at start: watched
    assert bus.gaps == {6, 7}
    assert bus.query() == (POLL_SQL, {"max_seen": 10, "gaps": [6, 7]})


def test_empty_bus_starts_at_zero():
    bus = tracker()
    assert bus.consume(start_rows(0, [])) == []
    assert (bus.max_seen, bus.gaps) == (0, set())
    assert bus.consume(poll_rows([1, 2])) == [channel_of(1), channel_of(2)]


def test_each_new_row_is_reported_once():
    bus = tracker()
    bus.consume(start_rows(10, range(6, 11)))
    assert bus.consume(poll_rows([11, 12])) == [channel_of(11), channel_of(12)]
    assert bus.consume(poll_rows([])) == []
    assert bus.max_seen == 12


def test_id_committed_out_of_order_is_reported_when_it_commits():
    bus = tracker()
    bus.consume(start_rows(10, range(6, 11)))
    # 11 is still in flight when 12 commits
    assert bus.consume(poll_rows([12])) == [channel_of(12)]
    assert bus.gaps == {11}
    assert bus.query()[1]["gaps"] == [11]
    assert bus.consume(poll_rows([11])) == [channel_of(11)]
    assert bus.gaps == set()
    assert bus.consume(poll_rows([])) == []


def test_rolled_back_gap_is_forgotten_once_its_transaction_must_have_ended():
    clock = Clock()
    bus = tracker(clock)
    bus.consume(start_rows(10, range(6, 11)), started=clock.now)
    clock.now += 1
    bus.consume(poll_rows([12], xmin=100, xmax=110))
    assert bus.gaps == {11}
    # a checkpoint two seconds later: every xid below 120 may hold id 11
    clock.now += 2.5
    bus.consume(poll_rows([], xmin=105, xmax=120))
    assert bus.gaps == {11}, "xid 105..119 still running: 11 may commit"
    clock.now += 1
    bus.consume(poll_rows([], xmin=119, xmax=125))
    assert bus.gaps == {11}
    clock.now += 1
    bus.consume(poll_rows([], xmin=120, xmax=125))
    assert bus.gaps == set()
    assert bus.floor == 12


def test_gap_is_kept_until_the_margin_has_passed():
    clock = Clock()
    bus = tracker(clock)
    bus.consume(start_rows(10, range(6, 11)))
    clock.now += 1
    bus.consume(poll_rows([12], xmin=100, xmax=100))
    # no transaction at all is running, but only 1.5 s have passed: the
    # transaction of id 11 may not have its xid yet
    clock.now += 1.5
    bus.consume(poll_rows([], xmin=101, xmax=101))
    assert 11 in bus.gaps
    clock.now += 1
    bus.consume(poll_rows([], xmin=102, xmax=102))
    assert bus.gaps == set()


def test_gap_that_commits_late_is_reported_before_being_settled():
    clock = Clock()
    bus = tracker(clock)
    bus.consume(start_rows(10, range(6, 11)))
    clock.now += 1
    bus.consume(poll_rows([12], xmin=100, xmax=110))
    clock.now += 3
    bus.consume(poll_rows([], xmin=105, xmax=120))
    clock.now += 1
    # the poll that proves 11's transaction over also sees its row
    assert bus.consume(poll_rows([11], xmin=120, xmax=121)) == [channel_of(11)]
    assert bus.gaps == set()


def test_start_window_gaps_are_settled_too():
    clock = Clock()
    bus = tracker(clock)
    bus.consume(start_rows(10, [10], xmin=10, xmax=10))
    assert bus.gaps == {6, 7, 8, 9}
    clock.now += 3
    bus.consume(poll_rows([], xmin=11, xmax=11))
    clock.now += 1
    bus.consume(poll_rows([], xmin=11, xmax=11))
    assert bus.gaps == set()


def test_too_many_gaps_keeps_the_newest_and_warns_once(caplog):
    bus = tracker(max_gaps=3)
    bus.consume(start_rows(10, range(6, 11)))
    with caplog.at_level(logging.WARNING):
        assert bus.consume(poll_rows([20])) == [channel_of(20)]
        bus.consume(poll_rows([30]))
    assert bus.gaps == {27, 28, 29}
    assert bus.floor == 26
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "more than 3 bus.bus ids of database db" in warnings[0].getMessage()


def test_huge_jump_does_not_build_a_huge_set():
    bus = tracker(max_gaps=10)
    bus.consume(start_rows(10, range(6, 11)))
    bus.consume(poll_rows([10**9]))
    assert len(bus.gaps) == 10
    assert bus.max_seen == 10**9


def test_recreated_database_starts_afresh(caplog):
    bus = tracker()
    bus.consume(start_rows(500, range(496, 501)))
    with caplog.at_level(logging.INFO):
        assert bus.consume(poll_rows([1], oid=OTHER_OID)) == []
    assert not bus.started
    assert "re-created" in caplog.text
    bus.consume(start_rows(1, [1], oid=OTHER_OID))
    assert bus.consume(poll_rows([2], oid=OTHER_OID)) == [channel_of(2)]


# --- on PostgreSQL, through the transaction-mode PgBouncer -----------------

BUS_TABLE = """
CREATE TABLE bus_bus (
    id SERIAL NOT NULL PRIMARY KEY,
    channel VARCHAR,
    message VARCHAR,
    create_date TIMESTAMP
)"""


@pytest.fixture
def bus_db(sandbox):
    """A scratch database with an Odoo-shaped bus_bus; PgBouncer params."""
    name = f"poll_{uuid.uuid4().hex[:8]}"
    sandbox.postgres.execute(f"CREATE DATABASE {name} OWNER odoo")
    params = sandbox.pgbouncer.odoo_params(name)
    with contextlib.closing(psycopg2.connect(**params)) as connection:
        connection.autocommit = True
        with connection.cursor() as cr:
            cr.execute(BUS_TABLE)
    yield params
    sandbox.pgbouncer._admin(f"KILL {name}")
    sandbox.pgbouncer._admin(f"RESUME {name}")
    sandbox.postgres.execute(f"DROP DATABASE {name} WITH (FORCE)")


def connect(params):
    return psycopg2.connect(**params)


def insert(connection, channel):
    with connection.cursor() as cr:
        cr.execute(
            "INSERT INTO bus_bus (channel, message, create_date) "
            "VALUES (%s, '{}', now() at time zone 'UTC') RETURNING id",
            (channel,),
        )
        return cr.fetchone()[0]


def test_rows_committed_out_of_order_are_reported_once_each(bus_db):
    poller = BusPoller(lambda: connect(bus_db), name="scratch", settle_margin=0.2)
    first, second = connect(bus_db), connect(bus_db)
    try:
        assert poller.poll() == []  # start
        ten = insert(first, '["db", "ten"]')
        eleven = insert(second, '["db", "eleven"]')
        assert eleven > ten
        second.commit()
        assert poller.poll() == ['["db", "eleven"]']
        assert poller.tracker.gaps == {ten}
        first.commit()
        assert poller.poll() == ['["db", "ten"]']
        assert poller.poll() == []
    finally:
        first.close()
        second.close()
        poller.close()


def test_rolled_back_id_is_settled_after_its_transaction(bus_db):
    poller = BusPoller(lambda: connect(bus_db), name="scratch", settle_margin=0.2)
    rolled, committed = connect(bus_db), connect(bus_db)
    try:
        poller.poll()
        lost = insert(rolled, '["db", "lost"]')
        insert(committed, '["db", "kept"]')
        committed.commit()
        assert poller.poll() == ['["db", "kept"]']
        assert lost in poller.tracker.gaps
        rolled.rollback()
        deadline = time.monotonic() + 60
        while poller.tracker.gaps and time.monotonic() < deadline:
            assert poller.poll() == []
            time.sleep(0.05)
        assert poller.tracker.gaps == set()
    finally:
        rolled.close()
        committed.close()
        poller.close()


WRITERS = 8
ROWS_PER_WRITER = 160


def write_rows(params, writer, committed, barrier):
    """Transactions of 1-3 rows, held open a little, one in ten rolled back."""
    rng = random.Random(writer)
    connection = connect(params)
    barrier.wait()
    written = 0
    try:
        while written < ROWS_PER_WRITER:
            channels = [
                json.dumps(["db", f"w{writer}-{written + n}"])
                for n in range(min(rng.randint(1, 3), ROWS_PER_WRITER - written))
            ]
            for channel in channels:
                insert(connection, channel)
            time.sleep(rng.random() * 0.02)
            if rng.random() < 0.1:
                connection.rollback()
            else:
                connection.commit()
                committed.extend(channels)
            written += len(channels)
    finally:
        connection.close()


def test_concurrent_writers_every_committed_row_reported_exactly_once(bus_db):
    # production's margin: a writer descheduled between nextval and its
    # INSERT (a loaded machine) must not have its gap settled too early
    poller = BusPoller(
        lambda: connect(bus_db), name="scratch", settle_margin=SETTLE_MARGIN
    )
    poller.poll()
    committed, reported = [], []
    barrier = threading.Barrier(WRITERS + 1)
    writers = [
        threading.Thread(target=write_rows, args=(bus_db, n, committed, barrier))
        for n in range(WRITERS)
    ]
    for thread in writers:
        thread.start()
    barrier.wait()
    max_gaps_seen = 0
    while any(thread.is_alive() for thread in writers):
        reported.extend(poller.poll())
        max_gaps_seen = max(max_gaps_seen, len(poller.tracker.gaps))
    for thread in writers:
        thread.join()
    deadline = time.monotonic() + 60
    while (
        poller.tracker.gaps or len(reported) < len(committed)
    ) and time.monotonic() < deadline:
        reported.extend(poller.poll())
        time.sleep(0.05)
    poller.close()
    assert len(committed) > 1000
    duplicates = [c for c, n in collections.Counter(reported).items() if n > 1]
    assert duplicates == []
    assert sorted(reported) == sorted(committed)
    assert max_gaps_seen > 0, "no out-of-order commit happened: a weak test"
    assert poller.tracker.gaps == set()


def test_poll_query_uses_the_primary_key_index(bus_db):
    with contextlib.closing(connect(bus_db)) as connection:
        connection.autocommit = True
        with connection.cursor() as cr:
            cr.execute(
                "INSERT INTO bus_bus (channel, message) "
                "SELECT '[\"db\", \"x\"]', '{}' FROM generate_series(1, 200000)"
            )
            cr.execute("ANALYZE bus_bus")
            cr.execute(
                "EXPLAIN " + POLL_SQL,
                {"max_seen": 199990, "gaps": [150000, 199000]},
            )
            plan = "\n".join(row[0] for row in cr.fetchall())
    assert "bus_bus_pkey" in plan, plan
    assert "Seq Scan on bus_bus" not in plan, plan


# --- a pinned xmin (issue 19, item 7) ---------------------------------------

PINNED_XID = 4_294_967_296 + 77  # epoch 1, xid 77: what txid_snapshot_xmin gives
POLLS_PER_HOUR = 7200  # one checkpoint each half second


def pinned_polls(bus, clock, count, first_id, xmin=PINNED_XID):
    """``count`` polls half a second apart, one new row each, with a
    transaction (``xmin``) that never ends; return the channels reported."""
    reported = []
    for row_id in range(first_id, first_id + count):
        clock.now += 0.5
        xmax = xmin + row_id  # other transactions come and go
        reported += bus.consume(poll_rows([row_id], xmin=xmin, xmax=xmax))
    return reported


def test_pinned_xmin_keeps_the_checkpoints_bounded():
    clock = Clock()
    bus = tracker(clock)
    bus.consume(start_rows(10, range(6, 11), xmin=PINNED_XID, xmax=PINNED_XID + 1))
    pinned_polls(bus, clock, POLLS_PER_HOUR, 11)
    after_an_hour = len(bus._checkpoints)
    pinned_polls(bus, clock, POLLS_PER_HOUR, 11 + POLLS_PER_HOUR)
    assert len(bus._checkpoints) == after_an_hour < POLLS_PER_HOUR


def test_pinned_xmin_warns_once_with_the_xid_and_how_long(caplog):
    clock = Clock()
    bus = tracker(clock)
    bus.consume(start_rows(10, range(6, 11), xmin=PINNED_XID, xmax=PINNED_XID + 1))
    with caplog.at_level(logging.INFO):
        pinned_polls(bus, clock, 2 * POLLS_PER_HOUR, 11)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "xmin" in warnings[0]
    assert "xid 77 " in warnings[0]  # the 32-bit xid, as pg_stat_activity shows it
    assert re.search(r"for at least \d+ s", warnings[0]), warnings[0]
    assert "database db" in warnings[0]
    assert "not visible to this database role" in warnings[0]


def test_gaps_kept_while_xmin_is_pinned_settle_once_it_moves_and_none_is_lost(
    caplog,
):
    clock = Clock()
    bus = tracker(clock)
    bus.consume(start_rows(10, range(6, 11), xmin=PINNED_XID, xmax=PINNED_XID + 1))
    clock.now += 0.5
    # 11 in flight, 12 rolled back: both gaps
    assert bus.consume(poll_rows([13], xmin=PINNED_XID, xmax=PINNED_XID + 5)) == [
        channel_of(13)
    ]
    reported = pinned_polls(bus, clock, 3 * POLLS_PER_HOUR, 14)
    assert reported == [channel_of(i) for i in range(14, 14 + 3 * POLLS_PER_HOUR)]
    assert {11, 12} <= bus.gaps, "xmin pinned: no gap may be forgotten"
    # three hours later, the transaction of id 11 commits, then xmin moves
    clock.now += 0.5
    last = 13 + 3 * POLLS_PER_HOUR
    moved = PINNED_XID + last + 10
    with caplog.at_level(logging.INFO):
        assert bus.consume(poll_rows([11], xmin=PINNED_XID, xmax=moved)) == [
            channel_of(11)
        ]
        for _ in range(6):
            clock.now += 0.5
            assert bus.consume(poll_rows([], xmin=moved, xmax=moved)) == []
    assert bus.gaps == set()
    assert bus.floor == last
    assert len(bus._checkpoints) < 10
    assert "xmin moves again" in caplog.text


def poll_until(poller, predicate, what):
    deadline = time.monotonic() + 60
    reported = []
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        reported += poller.poll()
        time.sleep(0.05)
    return reported


def hold_xmin(params):
    """A session idle in a transaction that has an xid; (connection, xid, pid)."""
    holder = connect(params)
    with holder.cursor() as cr:
        cr.execute("SELECT txid_current() % (2 ^ 32)::bigint, pg_backend_pid()")
        xid, pid = cr.fetchone()
    return holder, xid, pid


def rolled_back_gap(params):
    """An id rolled back below a committed one: a gap of the tracker."""
    rolled, committed = connect(params), connect(params)
    try:
        lost = insert(rolled, '["db", "lost"]')
        insert(committed, '["db", "kept"]')
        committed.commit()
        rolled.rollback()
    finally:
        rolled.close()
        committed.close()
    return lost


def test_session_idle_in_transaction_holding_xmin_is_named(bus_db, caplog):
    poller = BusPoller(
        lambda: connect(bus_db), name="scratch", settle_margin=0.2, max_checkpoints=3
    )
    holder, xid, pid = hold_xmin(bus_db)
    try:
        poller.poll()
        lost = rolled_back_gap(bus_db)
        with caplog.at_level(logging.INFO, logger="bus_alt_connection"):
            reported = poll_until(
                poller, lambda: "xmin is held" in caplog.text, "the warning"
            )
            assert reported == ['["db", "kept"]']
            assert lost in poller.tracker.gaps
            assert len(poller.tracker._checkpoints) <= 3
            holder.commit()
            poll_until(poller, lambda: not poller.tracker.gaps, "the gaps to settle")
        warning = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warning) == 1, warning
        assert f"xid {xid} " in warning[0]
        assert f"session pid {pid}: idle in transaction, user odoo" in warning[0]
        assert "xmin moves again" in caplog.text
    finally:
        holder.close()
        poller.close()


def test_a_role_without_pg_read_all_stats_still_names_the_holder(
    sandbox, bus_db, caplog
):
    role = f"reader_{uuid.uuid4().hex[:6]}"
    sandbox.postgres.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'reader-pw'")
    sandbox.postgres.execute(
        f"GRANT SELECT ON bus_bus, bus_bus_id_seq TO {role}", dbname=bus_db["dbname"]
    )
    reader = sandbox.postgres.odoo_params(bus_db["dbname"])
    reader.update(user=role, password="reader-pw")
    poller = BusPoller(
        lambda: connect(reader), name="scratch", settle_margin=0.2, max_checkpoints=3
    )
    holder, xid, pid = hold_xmin(bus_db)
    try:
        poller.poll()
        rolled_back_gap(bus_db)  # xids go on being assigned
        with caplog.at_level(logging.WARNING, logger="bus_alt_connection"):
            poll_until(poller, lambda: "xmin is held" in caplog.text, "the warning")
        assert f"xid {xid} " in caplog.text
        assert f"session pid {pid}: state hidden from this role, user odoo" in (
            caplog.text
        )
    finally:
        holder.close()
        poller.close()
        sandbox.postgres.execute(f"DROP OWNED BY {role}", dbname=bus_db["dbname"])
        sandbox.postgres.execute(f"DROP ROLE {role}")


# --- one slow database among several (issue 19, item 6) ---------------------

#: generous: the CPU is shared; nothing below asserts a duration
WAIT = 60


class Databases:
    """``poll_one`` of fake databases: ``blocked`` ones wait for ``release``;
    the others return one new channel per poll."""

    def __init__(self, *blocked):
        self.blocked = set(blocked)
        self.release = threading.Event()
        self.entered = collections.defaultdict(threading.Event)
        self.lock = threading.Lock()
        self.calls = collections.Counter()
        self.running = collections.Counter()
        self.overlaps = []

    def poll_one(self, name):
        with self.lock:
            self.calls[name] += 1
            number = self.calls[name]
            self.running[name] += 1
            if self.running[name] > 1:
                self.overlaps.append(name)
        self.entered[name].set()
        try:
            if name in self.blocked:
                assert self.release.wait(WAIT)
            return [f"{name}-{number}"]
        finally:
            with self.lock:
                self.running[name] -= 1


def run_round(polls, names):
    """One round, in a thread: a round that hangs fails the test; its
    ``(answered, failed, started)``."""
    result = []
    thread = threading.Thread(target=lambda: result.append(polls.round(names)))
    thread.start()
    thread.join(WAIT)
    assert result, f"the round over {names} did not return"
    return result[0]


def rounds_until(polls, names, predicate):
    """Rounds until ``predicate(answers)``; every answer of every round."""
    answers = collections.defaultdict(list)
    deadline = time.monotonic() + WAIT
    while not predicate(answers):
        assert time.monotonic() < deadline, dict(answers)
        for name, channels in run_round(polls, names)[0].items():
            answers[name] += channels
        time.sleep(0.01)
    return answers


def test_a_blocked_database_does_not_hold_up_the_others():
    databases = Databases("slow")
    polls = BoundedPolls(databases.poll_one, bound=0.2)
    try:
        names = ["slow", "fast"]
        answers = rounds_until(polls, names, lambda a: len(a["fast"]) >= 3)
        assert answers["slow"] == []
        assert databases.calls["slow"] == 1
    finally:
        databases.release.set()


def test_a_late_answer_is_handed_over_once_and_polling_resumes():
    databases = Databases("slow")
    polls = BoundedPolls(databases.poll_one, bound=0.2)
    run_round(polls, ["slow", "fast"])
    run_round(polls, ["slow", "fast"])
    databases.release.set()
    answers = rounds_until(polls, ["slow", "fast"], lambda a: "slow-2" in a["slow"])
    assert answers["slow"][:2] == ["slow-1", "slow-2"]
    assert len(answers["slow"]) == len(set(answers["slow"]))
    assert databases.overlaps == []


def test_never_two_polls_of_one_database_at_once():
    databases = Databases("slow")
    polls = BoundedPolls(databases.poll_one, bound=0.05)
    try:
        for _ in range(20):
            run_round(polls, ["slow", "fast"])
        assert databases.calls["slow"] == 1
        assert databases.overlaps == []
    finally:
        databases.release.set()


def test_a_slow_database_is_named_once_per_stretch(caplog):
    databases = Databases("slow")
    polls = BoundedPolls(databases.poll_one, bound=1.0)
    with caplog.at_level(logging.INFO, logger="bus_alt_connection"):
        for _ in range(5):
            run_round(polls, ["slow", "fast"])
        databases.release.set()
        rounds_until(polls, ["slow"], lambda a: len(a["slow"]) >= 3)
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    warnings = [text for level, text in lines if level == "WARNING"]
    assert len(warnings) == 1, lines
    assert "database slow did not answer within 1 s" in warnings[0]
    assert "fast" not in warnings[0]
    infos = [text for level, text in lines if level == "INFO"]
    assert len(infos) == 1 and "database slow" in infos[0], lines


def test_a_failed_poll_is_returned_with_its_database_and_the_rest_still_answers():
    def poll_one(name):
        if name == "gone":
            raise LookupError("database gone does not exist")
        return [name]

    answered, failed, started = run_round(
        BoundedPolls(poll_one, bound=1.0), ["gone", "ok"]
    )
    assert answered == {"ok": ["ok"]}
    assert list(failed) == ["gone"]
    assert isinstance(failed["gone"], LookupError)
    assert started == 2


def test_at_most_max_running_polls_at_once():
    databases = Databases("slow1", "slow2")
    polls = BoundedPolls(databases.poll_one, bound=0.05, max_running=2)
    try:
        for _ in range(5):
            run_round(polls, ["slow1", "slow2", "fast"])
        assert databases.calls["fast"] == 0
    finally:
        databases.release.set()
    rounds_until(polls, ["slow1", "slow2", "fast"], lambda a: a["fast"])


def test_poll_threads_do_not_keep_the_process_alive():
    databases = Databases("slow")
    polls = BoundedPolls(databases.poll_one, bound=0.05)
    run_round(polls, ["slow"])
    assert databases.entered["slow"].wait(WAIT)
    try:
        pollers = [t for t in threading.enumerate() if "poll" in t.name]
        assert pollers and all(t.daemon for t in pollers)
    finally:
        databases.release.set()


# --- on PostgreSQL: a database whose bus_bus is locked ----------------------


@pytest.fixture
def bus_dbs(sandbox):
    """Factory of scratch databases with an Odoo-shaped bus_bus."""
    names = []

    def create():
        name = f"poll_{uuid.uuid4().hex[:8]}"
        sandbox.postgres.execute(f"CREATE DATABASE {name} OWNER odoo")
        names.append(name)
        params = sandbox.pgbouncer.odoo_params(name)
        with contextlib.closing(psycopg2.connect(**params)) as connection:
            connection.autocommit = True
            with connection.cursor() as cr:
                cr.execute(BUS_TABLE)
        return params

    yield create
    for name in names:
        sandbox.pgbouncer._admin(f"KILL {name}")
        sandbox.pgbouncer._admin(f"RESUME {name}")
        sandbox.postgres.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_locked_bus_of_one_database_does_not_stall_another(bus_dbs, caplog):
    params = {"locked": bus_dbs(), "free": bus_dbs()}
    pollers = {
        name: BusPoller(lambda p=p: connect(p), name=name, settle_margin=0.2)
        for name, p in params.items()
    }
    polls = BoundedPolls(lambda name: pollers[name].poll(), bound=0.5)
    names = list(pollers)
    locker = connect(params["locked"])
    try:
        run_round(polls, names)  # both start
        with locker.cursor() as cr:
            cr.execute("LOCK TABLE bus_bus IN ACCESS EXCLUSIVE MODE")
        with caplog.at_level(logging.WARNING, logger="bus_alt_connection"):
            with contextlib.closing(connect(params["free"])) as writer:
                for n in range(3):
                    insert(writer, f'["free", {n}]')
                    writer.commit()
            answers = rounds_until(polls, names, lambda a: len(a["free"]) == 3)
        assert answers["locked"] == []
        assert "database locked" in caplog.text
        locker.rollback()
        with contextlib.closing(connect(params["locked"])) as writer:
            insert(writer, '["locked", 0]')
            writer.commit()
        answers = rounds_until(polls, names, lambda a: a["locked"])
        assert answers["locked"] == ['["locked", 0]']
    finally:
        locker.close()
        for poller in pollers.values():
            poller.close()


def test_a_poll_that_fails_in_time_does_not_end_the_slow_stretch(caplog):
    release, outcomes = threading.Event(), ["late", "error", "ok"]

    def poll_one(name):
        outcome = outcomes.pop(0)
        if outcome == "late":
            assert release.wait(WAIT)
        if outcome == "error":
            raise OSError("query_wait_timeout")
        return [outcome]

    def infos():
        return [r.getMessage() for r in caplog.records if r.levelname == "INFO"]

    polls = BoundedPolls(poll_one, bound=1.0)
    with caplog.at_level(logging.INFO, logger="bus_alt_connection"):
        run_round(polls, ["db"])
        release.set()
        assert rounds_until(polls, ["db"], lambda a: a["db"])["db"] == ["late"]
        assert list(run_round(polls, ["db"])[1]) == ["db"]
        assert infos() == []
        assert run_round(polls, ["db"])[0] == {"db": ["ok"]}
    assert len(infos()) == 1 and "answers within 1 s again" in infos()[0]
