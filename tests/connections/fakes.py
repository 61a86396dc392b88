"""An in-test upstream that behaves like Sage's and Kommo's OAuth servers: access tokens
expire, refresh tokens rotate and are single-use (a reused one is refused), and can be revoked.
It also serves Sage's /businesses, Kommo's /api/v4/account and one protected resource."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

CLIENT_ID = "bridge-client"
CLIENT_SECRET = "bridge-client-secret-9f8e7d"
BUSINESS_ID = "b" * 32
BUSINESS_NAME = "Test Trading Ltd"
KOMMO_ACCOUNT_ID = 31000001


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class _Refresh:
    expires_at: datetime
    spent: bool = False


@dataclass
class FakeOAuthServer:
    clock: FakeClock
    access_ttl: int = 300
    refresh_ttl: int = 31 * 24 * 3600
    # Latency after a refresh token is spent and before the answer: widens every race.
    refresh_delay: float = 0.0
    businesses: list[dict[str, str]] = field(
        default_factory=lambda: [{"id": BUSINESS_ID, "displayed_as": BUSINESS_NAME}]
    )
    # Every protected call answers 401 (Sage's "No active subscription").
    always_unauthorized: bool = False
    # The token endpoints answer 503.
    outage: bool = False
    refresh_requests: int = 0
    invalid_grants: int = 0
    issued: list[tuple[str, str]] = field(default_factory=list)
    protected_calls: list[str] = field(default_factory=list)
    token_hosts: list[str] = field(default_factory=list)
    token_bodies: list[dict[str, Any]] = field(default_factory=list)
    _codes: dict[str, str] = field(default_factory=dict)
    _refresh: dict[str, _Refresh] = field(default_factory=dict)
    _access: dict[str, datetime] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.app = _build_app(self)

    def transport(self) -> httpx.ASGITransport:
        return httpx.ASGITransport(app=self.app)

    def issue_code(self, redirect_uri: str) -> str:
        """What the consent screen hands to the redirect URI."""
        code = "code-" + secrets.token_urlsafe(16)
        self._codes[code] = redirect_uri
        return code

    def revoke(self, refresh_token: str) -> None:
        self._refresh[refresh_token].spent = True

    def invalidate(self, access_token: str) -> None:
        self._access[access_token] = self.clock()

    @property
    def latest(self) -> tuple[str, str]:
        return self.issued[-1]

    def valid(self, authorization: str | None) -> str | None:
        token = (authorization or "").removeprefix("Bearer ")
        expires = self._access.get(token)
        return token if expires is not None and self.clock() < expires else None

    def exchange(self, form: dict[str, Any]) -> dict[str, Any] | None:
        redirect_uri = self._codes.pop(form.get("code", ""), None)
        if redirect_uri is None or redirect_uri != form.get("redirect_uri"):
            return None
        return self._issue()

    async def refresh(self, refresh_token: str) -> dict[str, Any] | None:
        self.refresh_requests += 1
        grant = self._refresh.get(refresh_token)
        if grant is None or grant.spent or self.clock() >= grant.expires_at:
            self.invalid_grants += 1
            return None
        grant.spent = True
        await asyncio.sleep(self.refresh_delay)
        return self._issue()

    def _issue(self) -> dict[str, Any]:
        access, refresh = "at-" + secrets.token_urlsafe(24), "rt-" + secrets.token_urlsafe(24)
        now = self.clock()
        self._access[access] = now + timedelta(seconds=self.access_ttl)
        self._refresh[refresh] = _Refresh(now + timedelta(seconds=self.refresh_ttl))
        self.issued.append((access, refresh))
        return {
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": self.access_ttl,
            "refresh_token_expires_in": self.refresh_ttl,
            "token_type": "bearer",
        }


def _build_app(server: FakeOAuthServer) -> FastAPI:
    app = FastAPI()

    @app.post("/oauth/token")
    async def sage_token(request: Request) -> JSONResponse:
        form = dict(parse_qsl((await request.body()).decode()))
        server.token_hosts.append(request.url.netloc)
        server.token_bodies.append(form)
        if server.outage:
            return JSONResponse({"error": "temporarily_unavailable"}, status_code=503)
        if (form.get("client_id"), form.get("client_secret")) != (CLIENT_ID, CLIENT_SECRET):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if form.get("grant_type") == "authorization_code":
            body = server.exchange(form)
        elif form.get("grant_type") == "refresh_token":
            body = await server.refresh(form.get("refresh_token", ""))
        else:
            body = None
        if body is None:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        return JSONResponse(body)

    @app.post("/oauth2/access_token")
    async def kommo_token(request: Request) -> JSONResponse:
        payload = await request.json()
        server.token_hosts.append(request.url.netloc)
        server.token_bodies.append(payload)
        if server.outage:
            return JSONResponse({"title": "Service Unavailable"}, status_code=503)
        if payload.get("grant_type") == "authorization_code":
            body = server.exchange(payload)
        else:
            body = await server.refresh(payload.get("refresh_token", ""))
        if body is None:
            problem = {
                "hint": "Token has been revoked",
                "title": "Unauthorized",
                "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson",
                "status": 401,
                "detail": "The refresh token is invalid.",
            }
            return JSONResponse(problem, status_code=401)
        body.pop("refresh_token_expires_in")
        return JSONResponse(body)

    @app.get("/v3.1/businesses")
    async def businesses(request: Request) -> JSONResponse:
        if server.valid(request.headers.get("authorization")) is None:
            return _sage_401()
        return JSONResponse({"$total": len(server.businesses), "$items": server.businesses})

    @app.get("/api/v4/account")
    async def account(request: Request) -> JSONResponse:
        if server.valid(request.headers.get("authorization")) is None:
            return JSONResponse({"title": "Unauthorized", "status": 401}, status_code=401)
        return JSONResponse({"id": KOMMO_ACCOUNT_ID, "name": "Test Co", "subdomain": "testco"})

    @app.get("/v3.1/protected")
    async def protected(request: Request) -> JSONResponse:
        header = request.headers.get("authorization", "")
        server.protected_calls.append(header.removeprefix("Bearer "))
        if server.always_unauthorized or server.valid(header) is None:
            return _sage_401()
        return JSONResponse({"ok": True})

    return app


def _sage_401() -> JSONResponse:
    body = [{"$severity": "error", "$dataCode": "AuthorizationFailure", "$message": "Nope"}]
    return JSONResponse(body, status_code=401)
