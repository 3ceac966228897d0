"""The API's HTTP/1.1 connections: uvicorn's httptools protocol with a deadline for each request's head
and body, a bound on the head's size and number of headers, idle connections closed from the first
moment, and the server's own errors as problems."""

from __future__ import annotations

import logging
from asyncio import TimerHandle, Transport
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from api.problems import MEDIA_TYPE, problem_body

log = logging.getLogger(__name__)

MAX_HEADERS = 100  # in one request
MAX_HEAD = 32 * 1024  # bytes of a request's line and headers


class HeadTooLarge(Exception):
    """Raised from a parser callback to stop reading a head over the limits (answered 431)."""


@dataclass(frozen=True)
class Timeouts:
    """Seconds a client is given: to send a request's line and headers, counted from their first byte;
    to send its body, counted from when the application starts on the request; and to begin a request
    on an idle connection, a new one or one kept alive after a response."""

    head: float = 10.0
    body: float = 30.0
    keep_alive: float = 5.0


class TimedHttpToolsProtocol(HttpToolsProtocol):
    """Give uvicorn `http=functools.partial(TimedHttpToolsProtocol, timeouts=...)`: it replaces
    uvicorn's `timeout_keep_alive`, and serves no websockets."""

    def __init__(self, *args, timeouts: Timeouts, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.timeouts = timeouts
        self.timeout_keep_alive = timeouts.keep_alive
        self.ws_protocol_class = None  # no websockets: an Upgrade is a plain request, as the timers assume
        self.between_requests = True  # no head being read, nor any body: the next byte starts a head
        self.head_timer: TimerHandle | None = None
        self.head_received = 0  # bytes of chunks that ended inside the head being read
        self.head_parsed = self.headers_parsed = 0  # of the head being read: bytes of URL and headers, headers
        self.head_refusal: str | None = None
        self.body_timer: TimerHandle | None = None

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn arms its keep-alive timer after a response only: a connection that never sends
        # a byte would be kept for ever.
        self.arm_keep_alive()

    def connection_lost(self, exc: Exception | None) -> None:
        self.head_timer = cancel(self.head_timer)
        self.body_timer = cancel(self.body_timer)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Blank lines before a request line start the clock too: they do not call on_message_begin.
        if self.between_requests and self.head_timer is None:
            self.head_timer = self.loop.call_later(self.timeouts.head, self.head_timed_out)
            self.head_received = 0
        super().data_received(data)
        # Still in the head: all of this chunk was head. This bounds what the parser holds of one
        # header not yet whole, which the callbacks below see only once it is.
        if self.head_timer is not None and not self.transport.is_closing():
            self.head_received += len(data)
            if self.head_received > MAX_HEAD:
                self.send_problem(431, f"the request line and headers exceed {MAX_HEAD} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_parsed = self.headers_parsed = 0

    def on_url(self, url: bytes) -> None:
        self.count_head(len(url), 0)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.count_head(len(name) + len(value), 1)
        super().on_header(name, value)

    def count_head(self, size: int, headers: int) -> None:
        self.head_parsed += size
        self.headers_parsed += headers
        if self.headers_parsed > MAX_HEADERS:
            self.head_refusal = f"more than {MAX_HEADERS} headers"
        elif self.head_parsed > MAX_HEAD:
            self.head_refusal = f"the request line and headers exceed {MAX_HEAD} bytes"
        else:
            return
        raise HeadTooLarge(self.head_refusal)  # the parser stops, and uvicorn calls send_400_response

    def on_headers_complete(self) -> None:
        self.between_requests = False
        self.head_timer = cancel(self.head_timer)
        super().on_headers_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app) -> None:
        super()._start_asgi_task(cycle, app)
        # Not from the head's end: a pipelined request waits, unread, for the one before it.
        if cycle.more_body:
            self.body_timer = self.loop.call_later(self.timeouts.body, self.body_timed_out)

    def on_message_complete(self) -> None:
        self.between_requests = True
        self.body_timer = cancel(self.body_timer)
        super().on_message_complete()
        # Answered before its body was read (a 413, a 415): the body's bytes stopped uvicorn's
        # keep-alive timer, and no response will start it again.
        if self.cycle.response_complete and not self.transport.is_closing():
            self.arm_keep_alive()

    def arm_keep_alive(self) -> None:
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def head_timed_out(self) -> None:
        self.head_timer = None
        log.info("closed a connection: request head too slow", extra={"client": self.client,
                                                                        "timeout": self.timeouts.head})
        self.transport.close()

    def body_timed_out(self) -> None:
        self.body_timer = None
        cycle = self.cycle
        log.info("closed a connection: request body too slow", extra={
            "client": self.client, "path": cycle.scope["path"], "timeout": self.timeouts.body})
        if cycle.response_started:  # the application answered without reading it all
            self.transport.close()
            return
        # The application sees a disconnect, and what it would answer now is dropped.
        cycle.disconnected = True
        cycle.message_event.set()
        self.send_problem(408, f"the request body did not arrive within {self.timeouts.body:g} s",
                          cycle.scope["path"])

    def send_400_response(self, msg: str) -> None:
        """What uvicorn answers a request it cannot parse (with a text/plain body of its own)."""
        if self.head_refusal is not None:
            self.send_problem(431, self.head_refusal)
        else:
            self.send_problem(400, "the request line or headers are not valid HTTP/1.1")

    def send_problem(self, status: int, detail: str, instance: str = "") -> None:
        """Answer a problem and close the connection."""
        body = problem_body(status, detail, instance)
        headers = [*self.server_state.default_headers, (b"content-type", MEDIA_TYPE.encode()),
                   (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
        self.transport.write(b"".join([STATUS_LINE[status], *(b"%s: %s\r\n" % header for header in headers),
                                       b"\r\n", body]))
        self.transport.close()


def cancel(timer: TimerHandle | None) -> None:
    """Cancel `timer` if there is one; None, for `timer = cancel(timer)`."""
    if timer is not None:
        timer.cancel()
