"""Odoo glue: wrappers around core's dispatcher, poll loop and cron runners."""
