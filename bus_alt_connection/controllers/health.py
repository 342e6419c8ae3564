# License AGPL-3.0 or later (https://www.gnu.org/licenses/agpl).
import contextlib
import json

import odoo
from odoo import http
from odoo.http import request

from odoo.addons.bus.models.bus import dispatch

from ..dispatcher_patch import install
from ..listener_health import health_report

NOT_THE_DISPATCHER = (
    "this process does not run the bus dispatcher; in prefork mode ask the "
    "gevent worker (gevent_port), which serves /websocket"
)


def _runs_the_dispatcher():
    # both flags are set by the server only in some modes and releases
    evented = getattr(odoo, "evented", False)
    return evented or not getattr(odoo, "multi_process", False)


def _listener_health():
    """(healthy, details); starts core's dispatcher as a websocket would."""
    if not _runs_the_dispatcher():
        return False, {"error": NOT_THE_DISPATCHER}
    with contextlib.suppress(RuntimeError):
        if not dispatch.is_alive():
            dispatch.start()
    return health_report(
        install(), getattr(dispatch._channels_to_ws, "last_received_at", None)
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
        healthy, _details = _listener_health()
        return _json({"status": "pass" if healthy else "fail"}, 200 if healthy else 503)

    @http.route("/bus_alt_connection/health/details", type="http", auth="user")
    def health_details(self):
        """The same, with the route and the listener's state: admins only."""
        if not request.env.user.has_group("base.group_system"):
            return _json({"error": "administrators only"}, 403)
        healthy, details = _listener_health()
        body = {"status": "pass" if healthy else "fail", **details}
        return _json(body, 200 if healthy else 503)
