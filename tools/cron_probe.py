"""A cron job that records when and through which connection it ran.

Used by the cron trigger tests and benchmark: the job inserts a row into
``bus_alt_cron_probe`` with the time and ``inet_client_port()`` of its own
transaction, so the caller can tell how long a trigger took to start the
job, and whether the job's queries went through PgBouncer.
"""

import time

PROBE_TABLE = "bus_alt_cron_probe"
CREATE_PROBE = f"""
CREATE TABLE IF NOT EXISTS {PROBE_TABLE} (
    id serial PRIMARY KEY,
    ran_at double precision NOT NULL,
    client_port integer
)"""
JOB_CODE = (
    f'env.cr.execute("INSERT INTO {PROBE_TABLE} (ran_at, client_port) '
    'SELECT extract(epoch FROM clock_timestamp()), inet_client_port()")'
)
#: how the blocked job's query shows in pg_stat_activity
SLOW_JOB = "'bus_alt_connection slow job'"
#: the advisory lock the blocked job waits for
BLOCKED_JOB_LOCK = 4711
CREATE_CRON = """
import datetime
env.cr.execute({create!r})
existing = env['ir.cron'].search([('name', '=', {name!r})])
if not existing:
    values = {{
        'name': {name!r},
        'model_id': env.ref('base.model_res_partner').id,
        'state': 'code',
        'code': {code!r},
        'interval_number': 1,
        'interval_type': 'days',
        'nextcall': datetime.datetime.now() + datetime.timedelta(days=300),
        'active': True,
    }}
    if 'numbercall' in env['ir.cron']._fields:
        values['numbercall'] = -1
    existing = env['ir.cron'].create(values)
env.cr.commit()
print('CRON', existing.id)
"""
TRIGGER = """
import time
env['ir.cron'].browse({cron_id})._trigger()
env.cr.commit()
print('TRIGGERED', time.time())
"""


def install_probe_cron(server):
    """Create the probe table and the (idle) probe cron; return its id."""
    return _install_cron(server, "bus_alt_connection probe", JOB_CODE)


def install_blocked_cron(server):
    """An (idle) cron whose job runs until ``BLOCKED_JOB_LOCK`` is free.

    Hold that advisory lock (on the server's database) to keep the job
    running; ``slow_job_running`` tells while it does.
    """
    code = (
        f'env.cr.execute("SELECT {SLOW_JOB}, '
        f'pg_advisory_xact_lock({BLOCKED_JOB_LOCK})")'
    )
    return _install_cron(server, "bus_alt_connection blocked job", code)


def slow_job_running(postgres, dbname):
    rows = postgres.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s "
        "AND pid <> pg_backend_pid()",
        (f"%{SLOW_JOB}%",),
        dbname=dbname,
    )
    return rows[0][0] > 0


def _install_cron(server, name, code):
    output = server.run_shell(
        CREATE_CRON.format(create=CREATE_PROBE, code=code, name=name)
    )
    return int(output.split("CRON", 1)[1].split()[0])


def trigger(server, cron_id):
    """``_trigger()`` the probe cron from another Odoo process; the time."""
    output = server.run_shell(TRIGGER.format(cron_id=cron_id), "trigger.log")
    return float(output.split("TRIGGERED", 1)[1].split()[0])


def last_run_id(postgres, dbname):
    rows = postgres.execute(f"SELECT max(id) FROM {PROBE_TABLE}", dbname=dbname)
    return rows[0][0] or 0


def wait_for_run(postgres, dbname, after_id, timeout):
    """(ran_at, client_port) of the first run after ``after_id``, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = postgres.execute(
            f"SELECT ran_at, client_port FROM {PROBE_TABLE} WHERE id > %s "
            "ORDER BY id LIMIT 1",
            (after_id,),
            dbname=dbname,
        )
        if rows:
            return rows[0]
        time.sleep(0.2)
    return None
