"""A cap on request bodies, enforced before any route, dependency or credential check.

Every JSON body this API accepts is a few hundred bytes, yet without a cap an
anonymous client could make the server buffer any amount before its 401 (a
114 MB POST grew the process by 350 MB). Pure ASGI (not BaseHTTPMiddleware), so
responses, streamed exports included, pass through untouched.

Starlette's own `RequestBodyLimitMiddleware` (FastAPI's `max_body_size`) only
reacts once the app reads the body or starts its response, and answers in plain
text; this one refuses a declared oversize body before the app runs at all.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimitMiddleware:
    """413 `{"detail": "Request body exceeds N bytes"}` for bodies over `max_body_bytes`.

    A `Content-Length` over the limit is refused before a byte of the body is
    read. A body without one (chunked) is counted as it arrives: the chunk that
    crosses the limit is dropped, the 413 is sent, and the app is told the client
    left, so it never holds more than the limit.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._refuse(scope, receive, send)
            return

        received = 0
        started = False
        refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    refused = True
                    if not started:
                        await self._refuse(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def send_unless_refused(message: Message) -> None:
            nonlocal started
            if refused and not started:
                return  # the 413 went out already; drop the app's answer to the "disconnect"
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counting_receive, send_unless_refused)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Connection: close makes the server drop the connection instead of reading
        # (and discarding) the rest of the body to reach the next request.
        response = JSONResponse(
            {"detail": f"Request body exceeds {self.max_body_bytes} bytes"},
            status_code=413,
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            # The server has already refused a malformed or conflicting length.
            return int(value) if value.isdigit() else None
    return None
