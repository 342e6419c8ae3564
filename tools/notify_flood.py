"""A burst of NOTIFYs, each in its own transaction, as a busy site sends them.

One transaction per round trip, so that the notifications reach a listener
spread out as a busy site's do (many transactions in one round trip would
reach it as a single burst). PostgreSQL delivers one notification per
transaction: it folds duplicates only within a transaction.
"""

import psycopg2
from psycopg2 import sql


def flood(params, channel, count, payload="flood"):
    """Send ``count`` NOTIFYs on ``channel`` with ``payload``, in autocommit."""
    connection = psycopg2.connect(**params)
    try:
        connection.autocommit = True
        with connection.cursor() as cr:
            statement = cr.mogrify(
                sql.SQL("NOTIFY {}, %s").format(sql.Identifier(channel)), (payload,)
            )
            for _ in range(count):
                cr.execute(statement)
    finally:
        connection.close()
