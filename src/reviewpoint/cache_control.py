"""No cache keeps what the API returns: tokens, key secrets, user data, exports.

Pure ASGI, adding headers to `http.response.start` only, so streamed exports
pass through untouched.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_PREFIX = "/api/"
# RFC 6749 section 5.1: token responses carry `Cache-Control: no-store` and
# `Pragma: no-cache` (the latter for HTTP/1.0 caches).
LOGIN_PATH = "/api/v1/auth/login"


class NoStoreMiddleware:
    """`Cache-Control: no-store` on every response under /api/, `Pragma: no-cache` on tokens."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        extra = [(b"cache-control", b"no-store")]
        if scope["path"] == LOGIN_PATH:
            extra.append((b"pragma", b"no-cache"))
        replaced = {name for name, _ in extra}

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() not in replaced
                ]
                message = {**message, "headers": [*headers, *extra]}
            await send(message)

        await self.app(scope, receive, send_no_store)
