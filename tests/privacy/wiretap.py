"""Relays that record every byte the parties send to the server: what crosses the wire.

``Wiretap`` records the TCP stream as it is (with TLS on, ciphertext: what an eavesdropper sees).
``TlsWiretap`` terminates TLS with a certificate of the job's CA, records the plaintext and
re-encrypts towards the server: what the *server* sees, which is what the SecAgg+ assertions are
about. Chained (parties -> Wiretap -> TlsWiretap -> server), the tests check both views of one run.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading

from modelplane.privacy.tls import TlsFiles


class Wiretap:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._lock = threading.Lock()
        self._upstream = bytearray()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def sent_to_server(self) -> bytes:
        with self._lock:
            return bytes(self._upstream)

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while data := src.recv(65536):
                if record:
                    with self._lock:
                        self._upstream += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


class TlsWiretap:
    """A TLS-terminating relay in front of a TLS server on ``target_port``; records the decrypted upstream."""

    def __init__(self, target_port: int, files: TlsFiles) -> None:
        self.target_port = target_port
        self._server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_ctx.load_cert_chain(str(files.cert), str(files.key))
        self._client_ctx = ssl.create_default_context(cafile=str(files.ca))
        self._upstream = bytearray()
        self._port = 0
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)
        self.port = self._port

    def sent_to_server(self) -> bytes:
        return bytes(self._upstream)  # appended to on the loop's thread only; a copy is a consistent prefix

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self._server_ctx)
        )
        self._port = int(server.sockets[0].getsockname()[1])
        ready.set()
        self._loop.run_forever()
        server.close()

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        try:
            sreader, swriter = await asyncio.open_connection(
                "127.0.0.1", self.target_port, ssl=self._client_ctx, server_hostname="127.0.0.1"
            )
        except (OSError, ssl.SSLError):
            cwriter.close()
            return
        await asyncio.gather(self._pump(creader, swriter, True), self._pump(sreader, cwriter, False))

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, record: bool) -> None:
        try:
            while data := await src.read(65536):
                if record:
                    self._upstream += data
                dst.write(data)
                await dst.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
                dst.close()
