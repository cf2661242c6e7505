"""A TCP forwarder for tests and bench.chaos: put it between a client and a server, then cut every connection at
will, refuse new ones for a while (a network partition), or forward nothing for a while (a network that drops
packets: connections stay up and silent)."""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpProxy:
    """Forward 127.0.0.1:<port> to `upstream`; `drop_all()` closes every forwarded connection."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.accepted = 0
        self.refusing = False
        """While set, new connections are closed at once (as a cut link would leave them)."""
        self.flowing = threading.Event()
        """Cleared while `silence()` holds every byte: they go on once it is set again."""
        self.flowing.set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self.lock:
                self.sockets += [client, server]
                self.accepted += 1
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self.flowing.wait()
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def drop_all(self) -> None:
        """Cut every connection made so far (both directions), as a network failure would."""
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def partition(self) -> None:
        """Cut every connection and refuse new ones until `heal()`."""
        self.refusing = True
        self.drop_all()

    def silence(self) -> None:
        """Keep every connection, and accept new ones, but forward nothing until `heal()` (then what was held goes
        on, as TCP would retransmit it)."""
        self.flowing.clear()

    def heal(self) -> None:
        """Accept connections again, and forward again."""
        self.refusing = False
        self.flowing.set()

    def close(self) -> None:
        """Stop listening and cut everything."""
        self.listener.close()
        self.drop_all()
