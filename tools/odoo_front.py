"""The reverse proxy a prefork Odoo stands behind, reduced to its routing.

In prefork mode the HTTP workers refuse websockets: an operator's proxy
sends ``/websocket`` to ``gevent_port`` and everything else to
``http_port``. This forwarder does the same per TCP connection, from the
path of the connection's first request: a browser opens every websocket on
a connection of its own, never on a kept-alive HTTP one.
"""

import contextlib
import socket
import threading

from .pg_sandbox import LOOPBACK
from .tcp_proxy import TcpProxy

HEAD_LIMIT = 65536


class OdooFront(TcpProxy):
    def __init__(self, http_port, gevent_port, port=None):
        super().__init__(http_port, port=port)
        self.gevent = (LOOPBACK, gevent_port)
        #: how many connections went to each port, by first path
        self.routed = {"http": 0, "websocket": 0}

    def _upstream_for(self, client):
        path = self._first_path(client)
        if path is None:
            return None
        websocket = path.startswith("/websocket")
        self.routed["websocket" if websocket else "http"] += 1
        return self.gevent if websocket else self.upstream

    @staticmethod
    def _first_path(client):
        """The request line's path, peeked (left in the socket), or None."""
        client.settimeout(30)
        with contextlib.suppress(OSError):
            while True:
                head = client.recv(HEAD_LIMIT, socket.MSG_PEEK)
                if not head:
                    return None
                if b"\r\n" in head or len(head) >= HEAD_LIMIT:
                    client.settimeout(None)
                    parts = head.split(b"\r\n", 1)[0].split(b" ")
                    return parts[1].decode("latin-1") if len(parts) > 1 else ""
                # a partial request line: wait for more bytes
                threading.Event().wait(0.01)
        return None
