"""The listener's life (``life.py``), and the bus and cron listeners."""
