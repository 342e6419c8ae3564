"""A private PostgreSQL cluster and PgBouncer on loopback ports.

Used by the test-suite, the demo and the benchmarks. Binaries come from the
Debian packages ``postgresql`` and ``pgbouncer``. ``initdb`` refuses to run
as root, so as root every server runs as the ``postgres`` OS user.
"""

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

import psycopg2

SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "sandbox-superuser-pw"
ODOO_USER = "odoo"
ODOO_PASSWORD = "sandbox-odoo-pw"
LOOPBACK = "127.0.0.1"


class SandboxError(RuntimeError):
    pass


def free_port():
    with contextlib.closing(socket.socket()) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def postgres_bindir():
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(path.split("/")[4]),
    )
    if candidates:
        return os.path.dirname(candidates[-1])
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(initdb)
    raise SandboxError(
        "PostgreSQL server binaries not found; apt-get install -y postgresql"
    )


def pgbouncer_binary():
    path = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.path.exists(path):
        raise SandboxError("pgbouncer not found; apt-get install -y pgbouncer")
    return path


def _server_user():
    """As root, servers run as ``postgres``; otherwise as ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError as error:
        raise SandboxError(
            "running as root needs the 'postgres' OS user "
            "(apt-get install -y postgresql creates it)"
        ) from error


def _as_server_user(argv):
    user = _server_user()
    if user is None:
        return argv
    return ["runuser", "-u", user.pw_name, "--", *argv]


def _give_to_server_user(path):
    user = _server_user()
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)


def _wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise SandboxError(f"timed out after {timeout} s waiting for {what}")


def odoo_params(port, dbname="postgres"):
    """psycopg2 parameters of the ``odoo`` role on a loopback port."""
    return {
        "host": LOOPBACK,
        "port": port,
        "user": ODOO_USER,
        "password": ODOO_PASSWORD,
        "dbname": dbname,
    }


def _accepts_connections(**params):
    try:
        psycopg2.connect(connect_timeout=2, **params).close()
    except psycopg2.OperationalError:
        return False
    return True


class PostgresServer:
    """A throw-away PostgreSQL cluster with password authentication."""

    def __init__(self, workdir, port=None):
        self.workdir = workdir
        self.datadir = os.path.join(workdir, "data")
        self.socketdir = os.path.join(workdir, "socket")
        self.logfile = os.path.join(workdir, "postgres.log")
        self.port = port or free_port()
        self.bindir = postgres_bindir()
        #: called after every start (the Sandbox resets PgBouncer's pools)
        self.on_start = []

    def _run(self, *argv):
        subprocess.run(
            _as_server_user([os.path.join(self.bindir, argv[0]), *argv[1:]]),
            check=True,
            capture_output=True,
            cwd=self.workdir,
        )

    def init(self):
        os.makedirs(self.socketdir, exist_ok=True)
        for path in (self.workdir, self.socketdir):
            _give_to_server_user(path)
        pwfile = os.path.join(self.workdir, "pwfile")
        with open(pwfile, "w") as handle:
            handle.write(SUPERUSER_PASSWORD + "\n")
        _give_to_server_user(pwfile)
        self._run(
            "initdb",
            "-D",
            self.datadir,
            "-U",
            SUPERUSER,
            "--pwfile",
            pwfile,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
        )
        os.unlink(pwfile)
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as conf:
            conf.write(
                f"listen_addresses = '{LOOPBACK}'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.socketdir}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 200\n"
            )
        return self

    def start(self):
        self._run("pg_ctl", "-D", self.datadir, "-l", self.logfile, "-w", "start")
        _wait_until(
            lambda: _accepts_connections(**self.superuser_params()),
            30,
            "PostgreSQL",
        )
        for started in self.on_start:
            started()
        return self

    def stop(self, mode="fast"):
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", self.datadir, "-m", mode, "-w", "stop")

    def restart(self):
        self.stop()
        self.start()

    def make_standby(self, workdir, port=None):
        """A streaming replica of this server, started, in ``workdir``."""
        standby = PostgresServer(workdir, port=port)
        os.makedirs(standby.socketdir, exist_ok=True)
        for path in (standby.workdir, standby.socketdir):
            _give_to_server_user(path)
        standby._run(
            "pg_basebackup",
            "-h",
            self.socketdir,
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-D",
            standby.datadir,
            "-R",
            "-X",
            "stream",
        )
        with open(os.path.join(standby.datadir, "postgresql.conf"), "a") as conf:
            conf.write(
                f"port = {standby.port}\n"
                f"unix_socket_directories = '{standby.socketdir}'\n"
            )
        return standby.start()

    def promote(self):
        self._run("pg_ctl", "-D", self.datadir, "-w", "promote")

    def superuser_params(self, dbname="postgres"):
        return {
            "host": self.socketdir,
            "port": self.port,
            "user": SUPERUSER,
            "dbname": dbname,
        }

    def odoo_params(self, dbname="postgres"):
        """What Odoo would use to connect directly (TCP, password)."""
        return odoo_params(self.port, dbname)

    def execute(self, sql, params=None, dbname="postgres"):
        conn = psycopg2.connect(**self.superuser_params(dbname))
        conn.autocommit = True
        try:
            with conn.cursor() as cr:
                cr.execute(sql, params)
                return cr.fetchall() if cr.description else None
        finally:
            conn.close()

    def create_odoo_role(self):
        self.execute(
            f"CREATE ROLE {ODOO_USER} LOGIN SUPERUSER PASSWORD %s", (ODOO_PASSWORD,)
        )
        return self


class PgBouncer:
    """PgBouncer in front of a PostgresServer, transaction pooling by default."""

    def __init__(self, workdir, postgres, pool_mode="transaction", port=None):
        self.workdir = workdir
        self.postgres = postgres
        self.pool_mode = pool_mode
        self.port = port or free_port()
        self.inifile = os.path.join(workdir, "pgbouncer.ini")
        self.logfile = os.path.join(workdir, "pgbouncer.log")
        self.pidfile = os.path.join(workdir, "pgbouncer.pid")
        self.process = None

    def retarget(self, postgres):
        """Send every pool to another PostgreSQL (a failover), restarting."""
        self.stop()
        self.postgres = postgres
        self.write_config()
        return self.start()

    def write_config(self):
        os.makedirs(self.workdir, exist_ok=True)
        _give_to_server_user(self.workdir)
        userlist = os.path.join(self.workdir, "userlist.txt")
        with open(userlist, "w") as handle:
            handle.write(f'"{ODOO_USER}" "{ODOO_PASSWORD}"\n')
            handle.write(f'"{SUPERUSER}" "{SUPERUSER_PASSWORD}"\n')
        backend = f"host={LOOPBACK} port={self.postgres.port}"
        with open(self.inifile, "w") as ini:
            ini.write(
                "[databases]\n"
                # a session-mode alias of the bus database, for LISTEN
                f"postgres_listen = {backend} dbname=postgres pool_mode=session\n"
                f"* = {backend}\n"
                "[pgbouncer]\n"
                f"listen_addr = {LOOPBACK}\n"
                f"listen_port = {self.port}\n"
                f"unix_socket_dir = {self.workdir}\n"
                f"auth_type = scram-sha-256\nauth_file = {userlist}\n"
                f"pool_mode = {self.pool_mode}\n"
                "max_client_conn = 500\ndefault_pool_size = 20\n"
                # after a PostgreSQL restart, retry logins after 1 s, not 15
                "server_login_retry = 1\n"
                # with PostgreSQL down, fail a waiting client after 5 s, not
                # 120 s, so that Odoo answers (health: 503) instead of hanging
                "query_wait_timeout = 5\n"
                "ignore_startup_parameters = extra_float_digits,options\n"
                f"logfile = {self.logfile}\npidfile = {self.pidfile}\n"
                f"admin_users = {SUPERUSER}\n"
            )
        for path in (userlist, self.inifile):
            _give_to_server_user(path)
        return self

    def start(self):
        if not os.path.exists(self.inifile):
            self.write_config()
        self.process = subprocess.Popen(
            _as_server_user([pgbouncer_binary(), self.inifile]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_until(
            lambda: _accepts_connections(**self.odoo_params()),
            30,
            "PgBouncer",
        )
        return self

    def stop(self):
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def odoo_params(self, dbname="postgres"):
        """What Odoo uses to connect through PgBouncer."""
        return odoo_params(self.port, dbname)

    def _admin(self, command):
        """Run a command on PgBouncer's admin console; return its rows."""
        conn = psycopg2.connect(
            host=LOOPBACK,
            port=self.port,
            user=SUPERUSER,
            password=SUPERUSER_PASSWORD,
            dbname="pgbouncer",
        )
        conn.autocommit = True
        try:
            with conn.cursor() as cr:
                cr.execute(command)
                if cr.description is None:
                    return []
                columns = [column.name for column in cr.description]
                return [dict(zip(columns, row, strict=False)) for row in cr.fetchall()]
        finally:
            conn.close()

    def add_user(self, name, password):
        """Let ``name`` log in through PgBouncer too (auth_file, RELOAD)."""
        with open(os.path.join(self.workdir, "userlist.txt"), "a") as handle:
            handle.write(f'"{name}" "{password}"\n')
        self._admin("RELOAD")

    def pools(self):
        """PgBouncer's SHOW POOLS, one dict per (database, user) pool."""
        return self._admin("SHOW POOLS")

    def config_value(self, key):
        """A setting of the running PgBouncer (SHOW CONFIG), as a string."""
        for row in self._admin("SHOW CONFIG"):
            if row["key"] == key:
                return row["value"]
        return None

    def server_local_ports(self):
        """Local TCP ports of PgBouncer's connections to PostgreSQL.

        A backend whose ``pg_stat_activity.client_port`` is not among them
        was opened by someone else than PgBouncer.
        """
        return {int(row["local_port"]) for row in self._admin("SHOW SERVERS")}

    def drop_server_connections(self):
        """After PostgreSQL restarted: no pooled connection from before it
        may reach a client (it would fail with "server closed the
        connection unexpectedly")."""
        if self.process is not None:
            self._admin("RECONNECT")


class Sandbox:
    """PostgreSQL plus a transaction-mode PgBouncer, cleaned up on exit."""

    def __init__(self, keep=False):
        self.keep = keep
        self.workdir = None
        self.postgres = None
        self.pgbouncer = None

    def __enter__(self):
        self.workdir = tempfile.mkdtemp(prefix="bus-alt-sandbox-")
        os.chmod(self.workdir, 0o755)
        try:
            self.postgres = PostgresServer(os.path.join(self.workdir, "pg"))
            os.makedirs(self.postgres.workdir)
            self.postgres.init().start().create_odoo_role()
            self.pgbouncer = PgBouncer(
                os.path.join(self.workdir, "pgbouncer"), self.postgres
            ).start()
            self.postgres.on_start.append(self.pgbouncer.drop_server_connections)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def add_superuser_role(self, name, password):
        """A second superuser, on PostgreSQL and PgBouncer (the benchmarks'
        sender, kept apart from the ``odoo`` role whose backends they count).
        """
        self.postgres.execute(
            f"CREATE ROLE {name} LOGIN SUPERUSER PASSWORD %s", (password,)
        )
        self.pgbouncer.add_user(name, password)

    def __exit__(self, *exc_info):
        if self.pgbouncer is not None:
            self.pgbouncer.stop()
        if self.postgres is not None:
            self.postgres.stop(mode="immediate")
        if not self.keep and self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
