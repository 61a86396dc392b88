"""Reaching a simulator in-process, as a socket would behave: `SandboxTransport`.

httpx's ASGITransport runs the app in the caller's task, so nothing times out and nothing can
drop a connection. This one adds both: the request's read timeout turns a held or slow answer
(``timeout_after_commit``, ``latency``) into ``httpx.ReadTimeout``, and a ``disconnect`` fault
becomes the ``httpx.RemoteProtocolError`` a client sees when a server closes mid-answer::

    transport = SandboxTransport(app=build_sage(config, state).app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sage.test/v3.1") as http:
        ...
"""

from __future__ import annotations

import asyncio

import httpx

from sandbox.common.middleware import ConnectionDropped


class SandboxTransport(httpx.ASGITransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        read = timeouts.get("read")
        try:
            async with asyncio.timeout(read) as deadline:
                return await super().handle_async_request(request)
        except TimeoutError:
            if not deadline.expired():
                raise
            message = f"the sandbox did not answer within {read} s"
            raise httpx.ReadTimeout(message, request=request) from None
        except ConnectionDropped:
            message = "Server disconnected without sending a response."
            raise httpx.RemoteProtocolError(message, request=request) from None
