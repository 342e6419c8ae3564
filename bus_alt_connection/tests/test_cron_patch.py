# License AGPL-3.0 or later (https://www.gnu.org/licenses/agpl).
from odoo import sql_db
from odoo.service import server
from odoo.tests.common import TransactionCase

from .. import cron_patch, dispatcher_patch


class TestCronPatch(TransactionCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # see test_dispatcher_patch: install() is idempotent
        settings, mode = dispatcher_patch.settings_or_defaults()
        dispatcher_patch.install(settings, mode)
        cron_patch.install(settings, mode)

    def test_callers_are_cores_cron_runners(self):
        names = {code.co_name for code in cron_patch.cron_listen_callers()}
        self.assertEqual(names, {"cron_thread", "start"})
        self.assertIn(
            server.WorkerCron.start.__code__, cron_patch.cron_listen_callers()
        )

    def test_other_callers_keep_odoo_connections(self):
        factory = getattr(sql_db.db_connect, "bus_alt_connection_cron", None)
        self.assertIsInstance(factory, cron_patch.TriggerConnectionFactory)
        connection = sql_db.db_connect("postgres")
        self.assertIsInstance(connection, sql_db.Connection)
        self.assertIsNot(connection, factory)

    def test_installed_once(self):
        db_connect = sql_db.db_connect
        cron_patch.install(*dispatcher_patch.settings_or_defaults())
        self.assertIs(sql_db.db_connect, db_connect, "patched twice")
