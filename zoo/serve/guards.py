"""ASGI middleware and the uvicorn protocol that keep `zoo serve` to its own origin and within its limits."""

from fastapi.responses import JSONResponse

from . import limits

_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class _TooLarge(Exception):
    pass


def _json_error(message, status):
    return JSONResponse({"error": message}, status_code=status)


class LimitRequestBody:
    """ASGI middleware: 413 for a body above `max_bytes`, by Content-Length or while it streams in (chunked):
    whatever the app made of the cut body is dropped and the 413 sent instead."""

    def __init__(self, app, max_bytes):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = _json_error(f"the upload is larger than {self.max_bytes // 2**20} MB; send fewer or smaller "
                                "files", 413)
        length = dict(scope["headers"]).get(b"content-length")
        try:
            declared = int(length) if length is not None else None
        except ValueError:
            return await _json_error("the Content-Length header is not a number", 400)(scope, receive, send)
        if declared is not None and declared > self.max_bytes:
            return await too_large(scope, receive, send)
        received, exceeded = 0, False

        async def counted_receive():
            nonlocal received, exceeded
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                exceeded = True
                raise _TooLarge
            return message

        async def guarded_send(message):
            if not exceeded:
                await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _TooLarge:
            pass
        if exceeded:
            await too_large(scope, receive, send)


def _host_name(host_header: str) -> str:
    """The name part of a Host header: "127.0.0.1:8000" -> "127.0.0.1", "[::1]:8000" -> "::1"."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class SameOrigin:
    """ASGI middleware: answer only requests whose Host names this server (DNS rebinding gets 421), and refuse
    every cross-site request that may change or cost something (not GET/HEAD/OPTIONS) with 403: a browser sends
    `Sec-Fetch-Site` and `Origin`, which must say same-origin. No CORS header is ever sent, so other sites can
    read nothing either. Clients that send neither header (curl, httpx, scripts) are not browsers and pass.

    Args:
        allowed_hosts: iterable of str. host names (no port) this server answers to.
    """

    def __init__(self, app, allowed_hosts):
        self.app, self.allowed = app, {h.lower().strip("[]") for h in allowed_hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if _host_name(host) not in self.allowed:
            return await _json_error(f"this server answers to {sorted(self.allowed)}, not the Host "
                                     f"{_shown(host)!r}", 421)(scope, receive, send)
        if scope["method"] not in _SAFE_METHODS:
            site, origin = headers.get("sec-fetch-site"), headers.get("origin")
            if site is not None and site not in ("same-origin", "none"):
                return await _json_error(f"cross-site request refused (Sec-Fetch-Site: {_shown(site)})",
                                         403)(scope, receive, send)
            if origin is not None and origin.lower() != f"{scope.get('scheme', 'http')}://{host}".lower():
                return await _json_error(f"cross-site request refused (Origin: {_shown(origin)})",
                                         403)(scope, receive, send)
        return await self.app(scope, receive, send)


def _shown(text, limit=80) -> str:
    """`text` as an answer may echo it: at most `limit` characters, the cut marked."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def protocol_with_header_timeout():
    """uvicorn's h11 protocol, closing a connection that has not sent a whole request head within
    limits.HEADER_TIMEOUT_S of connecting or of its last answer (uvicorn times out idle keep-alive connections only
    after a first answer, so a client that never finishes its headers would hold a socket forever)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11(H11Protocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm_header_timer()

        def _arm_header_timer(self):
            waiting_after = self.cycle  # a new request replaces the cycle once its head is parsed
            self._header_timer = self.loop.call_later(
                limits.HEADER_TIMEOUT_S, lambda: self.cycle is waiting_after and not self.transport.is_closing()
                and self.transport.close())

        def on_response_complete(self):
            self._header_timer.cancel()
            super().on_response_complete()
            self._arm_header_timer()

        def connection_lost(self, exc):
            self._header_timer.cancel()
            super().connection_lost(exc)

    return HeaderTimeoutH11
