"""The oracle's HTTP client waits out 503 + Retry-After, as the page does, and gives up in time."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from activestream.pipelines.annotate import polite_session


class Refusing(BaseHTTPRequestHandler):
    """Answers 503 with ``Retry-After: 0`` to the first ``refusals`` requests, then 200."""

    refusals = 0
    seen = 0

    def _answer(self) -> None:
        type(self).seen += 1
        if type(self).seen <= type(self).refusals:
            self.send_response(503)
            self.send_header("Retry-After", "0")
            body = b'{"detail": "busy"}'
        else:
            self.send_response(200)
            body = b'{"accepted": 1, "duplicates": 0}'
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802 (the http.server name)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    Refusing.seen = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_a_post_refused_twice_with_503_is_resent_until_accepted(server):
    Refusing.refusals = 2
    answer = polite_session().post(f"{server}/labels", json={"labels": []}, timeout=5)
    assert answer.status_code == 200 and answer.json()["accepted"] == 1
    assert Refusing.seen == 3


def test_a_service_that_keeps_refusing_gets_its_last_503_back_after_the_retries(server):
    Refusing.refusals = 100
    answer = polite_session(retries=3).post(f"{server}/labels", json={}, timeout=5)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "0"
    assert Refusing.seen == 4  # the first try and three retries
