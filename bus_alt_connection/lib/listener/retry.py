"""How long a listener waits before it tries to connect again."""

import random

FIRST_RETRY_DELAY = 1.0
FAST_RETRIES = 10
MAX_RETRY_DELAY = 30.0


def retry_delay(failures, rng=random.random, first=FIRST_RETRY_DELAY, cap=None):
    """Seconds to wait after ``failures`` consecutive failed attempts (>= 1).

    The first ``FAST_RETRIES`` waits are at most ``first`` seconds, so that
    a restart or a failover (a few seconds) costs at most about a second
    once the server is back; after that the wait doubles up to ``cap``.
    Each wait is jittered ("equal jitter": between half and all of it), so
    that the servers of a cluster do not reconnect in step.
    """
    cap = MAX_RETRY_DELAY if cap is None else cap
    ceiling = min(cap, first * 2 ** max(0, failures - FAST_RETRIES))
    return ceiling / 2 + rng() * ceiling / 2
