# License AGPL-3.0 or later (https://www.gnu.org/licenses/agpl).
import json
import logging

import odoo
from odoo import http
from odoo.http import request
from odoo.service import security
from odoo.tools import config

from odoo.addons.bus.models.bus import dispatch

from ..lib.log_once import error_once
from ..lib.route.config import OptionError
from ..lib.status import health, metrics
from ..patches.bus_dispatcher import installed_listener
from ..patches.cron_runner import installed_factory

_logger = logging.getLogger(__name__)
_report_bad_allow = error_once(
    _logger, "bus_alt_connection: %s; only administrators may read the metrics."
)


def runs_the_dispatcher():
    """A threaded server or prefork's gevent worker; not an HTTP worker
    (``odoo.multi_process`` would tell, but only 16.0 and 17.0 set it)."""
    return getattr(odoo, "evented", False) or not config["workers"]


def _listener_health():
    """(healthy, details) of this process's bus listener. Only reads state:
    the dispatcher starts with the first websocket, never with a health check."""
    if not runs_the_dispatcher():
        return False, {"error": health.NOT_THE_DISPATCHER}
    listener = installed_listener()
    if listener is None:
        return False, {"error": health.NOT_INSTALLED}
    if not dispatch.is_alive():
        return health.idle_report(listener)
    return health.health_report(
        listener, getattr(dispatch._channels_to_ws, "last_received_at", None)
    )


def _json(body, status):
    headers = [("Content-Type", "application/json")]
    return request.make_response(json.dumps(body), headers=headers, status=status)


def _is_administrator():
    """A logged-in, still valid session of a Settings administrator."""
    uid = request.session.uid
    env = getattr(request, "env", None)
    if not uid or env is None:
        return False
    env = env(user=uid)
    return bool(security.check_session(request.session, env)) and env.user._is_system()


def _dispatcher_state():
    listener = installed_listener()
    if listener is None or not runs_the_dispatcher():
        return None
    return {
        "listener": listener,
        "started": dispatch.is_alive(),
        "channel_map": dispatch._channels_to_ws,
    }


class BusListenerStatus(http.Controller):
    @http.route(
        "/bus_alt_connection/health", type="http", auth="none", save_session=False
    )
    def health(self):
        """For monitors: 200 when the bus listener is healthy, 503 when not."""
        healthy, details = _listener_health()
        return _json(health.public_body(healthy, details), 200 if healthy else 503)

    @http.route("/bus_alt_connection/health/details", type="http", auth="user")
    def health_details(self):
        """The same, with the route and the listener's state: admins only."""
        if not request.env.user.has_group("base.group_system"):
            return _json({"error": "administrators only"}, 403)
        healthy, details = _listener_health()
        body = {"status": "pass" if healthy else "fail", **details}
        return _json(body, 200 if healthy else 503)

    @http.route(
        "/bus_alt_connection/metrics", type="http", auth="none", save_session=False
    )
    def metrics(self):
        """Prometheus: for the addresses of bus_alt_connection_metrics_allow
        and for administrators; 403 otherwise. Only reads state. On 16.0,
        ``httprequest.environ`` is a copy without werkzeug's keys: read
        ``headers.environ``, the one Odoo's ProxyFix wrote to."""
        address = metrics.address_to_judge(request.httprequest.headers.environ)
        try:
            networks = metrics.parse_allow(config.get(metrics.ALLOW_OPTION))
        except OptionError as error:
            _report_bad_allow(error)
            networks = []
        if not (metrics.address_allowed(address, networks) or _is_administrator()):
            return request.make_response(
                "forbidden\n", headers=[("Content-Type", "text/plain")], status=403
            )
        factory = installed_factory()
        body = metrics.render(
            _dispatcher_state(), factory.connections() if factory is not None else ()
        )
        headers = [("Content-Type", metrics.CONTENT_TYPE)]
        return request.make_response(body, headers=headers)
