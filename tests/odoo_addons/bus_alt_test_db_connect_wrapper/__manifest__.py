# Copyright 2026 Odoo Community Association (OCA)
# License AGPL-3.0 or later (https://www.gnu.org/licenses/agpl).
{
    "name": "bus_alt_connection test: another addon wrapping db_connect",
    "summary": "Test fixture only: wraps odoo.sql_db.db_connect after the addon",
    "version": "1.0.0",
    "category": "Hidden",
    "website": "https://github.com/OCA/server-tools",
    "author": "Odoo Community Association (OCA)",
    "license": "AGPL-3",
    "depends": ["base"],
    "post_load": "post_load",
    "installable": True,
}
