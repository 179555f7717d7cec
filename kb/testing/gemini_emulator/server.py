"""HTTP plumbing: a ThreadingHTTPServer on 127.0.0.1 that hands each request to `api.handle`.

HTTP/1.1 with keep-alive (the SDK's httpx pool reuses connections), a Content-Length on every answer.
"""

import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .api import handle
from .messages import HttpRequest, HttpResponse
from .state import EmulatorState


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "EmulatorHTTPServer"

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the emulator's own log is the record."""

    def _serve(self) -> None:
        request = HttpRequest(
            method=self.command,
            path=self.path,
            headers={name.lower(): value for name, value in self.headers.items()},
            body=self._read_body(),
            host=self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2]),
        )
        response = handle(self.server.state, request)
        if response.delay_s:
            time.sleep(response.delay_s)
        if response.disconnect:
            self.close_connection = True
            return
        try:
            self._write(response)
        except OSError:  # the client gave up (e.g. its timeout fired during a latency fault)
            self.close_connection = True

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()  # the blank line after the last chunk (no trailers expected)
                return bytes(body)
            body.extend(self.rfile.read(size))
            self.rfile.readline()

    def _write(self, response: HttpResponse) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)
        self.wfile.flush()


class EmulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, state: EmulatorState, host: str, port: int) -> None:
        super().__init__((host, port), _Handler)
        self.state = state

    def handle_error(self, request: object, client_address: object) -> None:
        # A client killed mid-request (the crash tests do it on purpose) is not the server's error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class ServerThread:
    """Runs the server in a daemon thread until `stop`."""

    def __init__(self, state: EmulatorState, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = EmulatorHTTPServer(state, host, port)
        self._thread = threading.Thread(target=self._serve, name="gemini-emulator", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def _serve(self) -> None:
        # A short poll interval makes `stop` quick (the default 0.5 s adds up over a test suite).
        self._server.serve_forever(poll_interval=0.02)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
