"""One listener engine, and the bus and cron trigger listeners on it."""
