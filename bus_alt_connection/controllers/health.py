# License AGPL-3.0 or later (https://www.gnu.org/licenses/agpl).
import json

import odoo
from odoo import http
from odoo.http import request
from odoo.tools import config

from odoo.addons.bus.models.bus import dispatch

from ..lib.status.health import (
    NOT_INSTALLED,
    NOT_THE_DISPATCHER,
    health_report,
    idle_report,
    public_body,
)
from ..patches.bus_dispatcher import installed_supervisor


def _runs_the_dispatcher():
    """A threaded server or prefork's gevent worker; not an HTTP worker.

    ``odoo.multi_process`` would tell, but only 16.0 and 17.0 set it.
    """
    return getattr(odoo, "evented", False) or not config["workers"]


def _listener_health():
    """(healthy, details) of this process's bus listener.

    Only reads state: the dispatcher starts with the first websocket, never
    with a health check.
    """
    if not _runs_the_dispatcher():
        return False, {"error": NOT_THE_DISPATCHER}
    supervisor = installed_supervisor()
    if supervisor is None:
        return False, {"error": NOT_INSTALLED}
    if not dispatch.is_alive():
        return idle_report(supervisor)
    return health_report(
        supervisor, getattr(dispatch._channels_to_ws, "last_received_at", None)
    )


def _json(body, status):
    return request.make_response(
        json.dumps(body),
        headers=[("Content-Type", "application/json")],
        status=status,
    )


class BusListenerHealth(http.Controller):
    @http.route(
        "/bus_alt_connection/health", type="http", auth="none", save_session=False
    )
    def health(self):
        """For monitors: 200 when the bus listener is healthy, 503 when not."""
        healthy, details = _listener_health()
        return _json(public_body(healthy, details), 200 if healthy else 503)

    @http.route("/bus_alt_connection/health/details", type="http", auth="user")
    def health_details(self):
        """The same, with the route and the listener's state: admins only."""
        if not request.env.user.has_group("base.group_system"):
            return _json({"error": "administrators only"}, 403)
        healthy, details = _listener_health()
        body = {"status": "pass" if healthy else "fail", **details}
        return _json(body, 200 if healthy else 503)
