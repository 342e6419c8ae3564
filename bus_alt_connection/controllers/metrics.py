# License AGPL-3.0 or later (https://www.gnu.org/licenses/agpl).
import logging

from odoo import http
from odoo.http import request
from odoo.service import security
from odoo.tools import config

from odoo.addons.bus.models.bus import dispatch

from ..lib.listener.listen_request import error_once
from ..lib.route.config import RouteConfigError
from ..lib.status.metrics import (
    ALLOW_OPTION,
    CONTENT_TYPE,
    address_allowed,
    address_to_judge,
    parse_allow,
    render,
)
from ..patches.bus_dispatcher import installed_supervisor
from ..patches.cron_runner import installed_factory
from .health import _runs_the_dispatcher

_logger = logging.getLogger(__name__)
_report_bad_allow = error_once(
    _logger, "bus_alt_connection: %s; only administrators may read the metrics."
)


def _allowed_networks():
    try:
        return parse_allow(config.get(ALLOW_OPTION))
    except RouteConfigError as error:
        _report_bad_allow(error)
        return []


def _is_administrator():
    """A logged-in, still valid session of a Settings administrator."""
    uid = request.session.uid
    env = getattr(request, "env", None)
    if not uid or env is None:
        return False
    env = env(user=uid)
    return bool(security.check_session(request.session, env)) and env.user._is_system()


def _dispatcher_state():
    supervisor = installed_supervisor()
    if supervisor is None or not _runs_the_dispatcher():
        return None
    return {
        "supervisor": supervisor,
        "started": dispatch.is_alive(),
        "channel_map": dispatch._channels_to_ws,
    }


class BusListenerMetrics(http.Controller):
    @http.route(
        "/bus_alt_connection/metrics", type="http", auth="none", save_session=False
    )
    def metrics(self):
        """Prometheus: for the addresses of bus_alt_connection_metrics_allow
        and for administrators; 403 otherwise. Only reads state.

        ``headers.environ`` is the environ Odoo's ProxyFix wrote to (on
        16.0, ``httprequest.environ`` is a copy without werkzeug's keys).
        """
        address = address_to_judge(request.httprequest.headers.environ)
        if not (address_allowed(address, _allowed_networks()) or _is_administrator()):
            return request.make_response(
                "forbidden\n", headers=[("Content-Type", "text/plain")], status=403
            )
        factory = installed_factory()
        body = render(
            _dispatcher_state(), factory.connections() if factory is not None else ()
        )
        return request.make_response(body, headers=[("Content-Type", CONTENT_TYPE)])
