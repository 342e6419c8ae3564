"""Log lines an operator needs once, not at every retry or request."""

import threading


def error_once(logger, message):
    """``report(why)`` logs ``message % why`` as one ERROR per process."""
    reported = threading.Event()

    def report(why):
        if not reported.is_set():
            reported.set()
            logger.error(message, why)

    report.reported = reported
    return report


def traceback_once(logger, logged, error, message, *args):
    """An ERROR with ``error``'s traceback, once per type (``logged``: those shown)."""
    if type(error) not in logged:
        logged.add(type(error))
        logger.error(message, *args, exc_info=error)
