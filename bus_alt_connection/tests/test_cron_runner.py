# License AGPL-3.0 or later (https://www.gnu.org/licenses/agpl).
from odoo import sql_db
from odoo.service import server
from odoo.tests.common import TransactionCase
from odoo.tools import config

from ..lib.listener import listen_request
from ..lib.route.config import read_settings
from ..patches import bus_dispatcher, cron_runner


class TestCronPatch(TransactionCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # see test_bus_dispatcher: install() is idempotent
        settings = read_settings(config)
        bus_dispatcher.install(settings)
        cron_runner.install(settings)
        cls.factory = cron_runner.installed_factory()

    def tearDown(self):
        listen_request.disarm(cron_runner.LISTEN_REQUEST)
        super().tearDown()

    def test_cores_runners_are_wrapped(self):
        self.assertIsInstance(self.factory, cron_runner.TriggerConnectionFactory)
        for cls, name in cron_runner.CRON_RUNNERS:
            runner = getattr(cls, name)
            self.assertIs(runner.bus_alt_connection_cron, self.factory)
            self.assertEqual(runner.__wrapped__.__module__, server.__name__)

    def test_other_connections_keep_odoo_connections(self):
        connection = sql_db.db_connect("postgres")
        self.assertIsInstance(connection, sql_db.Connection)

    def test_a_wrapper_installed_after_ours_still_gets_the_redirect(self):
        def another_addons_db_connect(to, *args, **kwargs):
            return sql_db.db_connect(to, *args, **kwargs)

        cron_runner.arm_trigger_request(self.factory)
        self.assertIs(another_addons_db_connect("postgres"), self.factory)
        # one-shot: the runner's next connections are Odoo's
        self.assertIsInstance(another_addons_db_connect("postgres"), sql_db.Connection)

    def test_a_runner_connecting_elsewhere_first_is_reported(self):
        cron_runner._report_missed.reported.clear()
        cron_runner.arm_trigger_request(self.factory)
        with self.assertLogs(cron_runner.__name__, "ERROR") as logged:
            connection = sql_db.db_connect(self.env.cr.dbname)
        self.assertIsInstance(connection, sql_db.Connection)
        self.assertIn("did not open its LISTEN connection", logged.output[0])
        self.assertIn(repr(self.env.cr.dbname), logged.output[0])

    def test_installed_once(self):
        runner = server.ThreadedServer.cron_thread
        cron_runner.install(read_settings(config))
        self.assertIs(server.ThreadedServer.cron_thread, runner, "patched twice")
