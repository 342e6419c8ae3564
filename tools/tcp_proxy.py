"""A loopback TCP forwarder the tests can cut, freeze and restore.

It stands between the bus listener and PostgreSQL to make the faults a
network makes: a route that is down (nothing listening), a route that was
cut (connections closed), and a route that silently stops carrying data
(connections kept open, nothing forwarded).
"""

import contextlib
import select
import socket
import threading
import time

from .pg_sandbox import LOOPBACK, free_port


class TcpProxy:
    def __init__(self, upstream_port, port=None):
        self.upstream = (LOOPBACK, upstream_port)
        self.port = port or free_port()
        self._server = None
        self._pairs = []
        self._lock = threading.Lock()
        self._frozen = threading.Event()
        self._running = threading.Event()

    def start(self):
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((LOOPBACK, self.port))
        server.listen(64)
        self._server = server
        self._running.set()
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()
        return self

    def stop(self):
        """Close the listening socket and every forwarded connection."""
        self._running.clear()
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)
            self._server.close()
            self._server = None
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def retarget(self, upstream_port):
        """Forward new connections to ``upstream_port``; open ones stay."""
        self.upstream = (LOOPBACK, upstream_port)

    def freeze(self):
        """Stop carrying bytes, and keep every connection open."""
        self._frozen.set()

    def thaw(self):
        self._frozen.clear()

    def _accept(self, server):
        while self._running.is_set():
            try:
                client, _address = server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _upstream_for(self, client):
        """(host, port) where ``client``'s connection goes; None drops it."""
        return self.upstream

    def _serve(self, client):
        target = self._upstream_for(client)
        try:
            if target is None:
                raise OSError("no upstream for this connection")
            upstream = socket.create_connection(target, timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            self._pairs.append((client, upstream))
        self._pump(client, upstream)

    def _pump(self, client, upstream):
        peers = {client: upstream, upstream: client}
        try:
            while self._running.is_set():
                if self._frozen.is_set():
                    time.sleep(0.1)
                    continue
                readable, _w, _x = select.select(list(peers), [], [], 0.2)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            for sock in peers:
                with contextlib.suppress(OSError):
                    sock.close()
