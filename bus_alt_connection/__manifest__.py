# Copyright 2026 Odoo Community Association (OCA)
# License AGPL-3.0 or later (https://www.gnu.org/licenses/agpl).
{
    "name": "Bus Alt Connection",
    "summary": "Keep Odoo's bus working behind a transaction-mode PgBouncer",
    "version": "18.0.2.0.0",
    "category": "Extra Tools",
    "website": "https://github.com/OCA/server-tools",
    "author": "Odoo Community Association (OCA)",
    "maintainers": [],
    "license": "AGPL-3",
    "development_status": "Beta",
    "depends": ["bus"],
    "post_load": "post_load",
    "installable": True,
}
