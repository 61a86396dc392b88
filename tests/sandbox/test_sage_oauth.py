"""Sage OAuth: code exchange, expiry, single-use rotating refresh tokens, static tokens."""

from __future__ import annotations

from typing import Any

import httpx

from sandbox.sage import SageSandbox
from tests.sandbox.helpers import FakeClock

CLIENT = {"client_id": "sandbox-sage-client", "client_secret": "sandbox-sage-secret"}
REDIRECT = "https://bridge.example/oauth/sage/callback"


async def _code(client: httpx.AsyncClient, **body: Any) -> str:
    response = await client.post("/sandbox/oauth/codes", json=body or None)
    assert response.status_code == 201
    code = response.json()["code"]
    assert isinstance(code, str)
    return code


async def _exchange(client: httpx.AsyncClient, code: str) -> httpx.Response:
    form = {**CLIENT, "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    return await client.post("/oauth/token", data=form)


async def _refresh(client: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    form = {**CLIENT, "grant_type": "refresh_token", "refresh_token": refresh_token}
    return await client.post("/oauth/token", data=form)


async def _businesses(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/v3.1/businesses", headers={"Authorization": f"Bearer {token}"})


async def test_code_exchange_issues_a_bearer_pair(sage_anonymous: httpx.AsyncClient) -> None:
    response = await _exchange(sage_anonymous, await _code(sage_anonymous, redirect_uri=REDIRECT))

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "access_token",
        "refresh_token",
        "expires_in",
        "refresh_token_expires_in",
        "token_type",
        "scope",
    }
    assert (body["expires_in"], body["refresh_token_expires_in"]) == (300, 31 * 24 * 3600)
    assert body["token_type"] == "bearer"
    assert (await _businesses(sage_anonymous, body["access_token"])).status_code == 200


async def test_code_is_single_use_and_lives_60_seconds(
    sage_anonymous: httpx.AsyncClient, clock: FakeClock
) -> None:
    code = await _code(sage_anonymous)
    assert (await _exchange(sage_anonymous, code)).status_code == 200
    reused = await _exchange(sage_anonymous, code)
    assert (reused.status_code, reused.json()) == (400, {"error": "invalid_grant"})

    stale = await _code(sage_anonymous)
    clock.advance(61)
    assert (await _exchange(sage_anonymous, stale)).json() == {"error": "invalid_grant"}


async def test_redirect_uri_must_match_the_one_the_code_was_issued_for(
    sage_anonymous: httpx.AsyncClient,
) -> None:
    code = await _code(sage_anonymous, redirect_uri="https://elsewhere.example/cb")
    response = await _exchange(sage_anonymous, code)
    assert (response.status_code, response.json()) == (400, {"error": "invalid_grant"})


async def test_wrong_client_secret_is_invalid_client(sage_anonymous: httpx.AsyncClient) -> None:
    form = {**CLIENT, "client_secret": "nope", "grant_type": "authorization_code", "code": "x"}
    response = await sage_anonymous.post("/oauth/token", data=form)
    assert (response.status_code, response.json()) == (401, {"error": "invalid_client"})


async def test_access_token_expires_after_its_lifetime(
    sage_anonymous: httpx.AsyncClient, clock: FakeClock
) -> None:
    tokens = (await _exchange(sage_anonymous, await _code(sage_anonymous))).json()
    clock.advance(299)
    assert (await _businesses(sage_anonymous, tokens["access_token"])).status_code == 200
    clock.advance(1)

    response = await _businesses(sage_anonymous, tokens["access_token"])

    assert response.status_code == 401
    assert response.json() == [
        {
            "$severity": "error",
            "$dataCode": "AuthorizationFailure",
            "$message": "The access token has expired.",
            "$source": "",
        }
    ]


async def test_refresh_rotates_and_the_old_refresh_token_is_dead(
    sage_anonymous: httpx.AsyncClient,
) -> None:
    first = (await _exchange(sage_anonymous, await _code(sage_anonymous))).json()

    second = await _refresh(sage_anonymous, first["refresh_token"])
    assert second.status_code == 200
    assert second.json()["refresh_token"] != first["refresh_token"]
    assert (await _businesses(sage_anonymous, second.json()["access_token"])).status_code == 200

    reused = await _refresh(sage_anonymous, first["refresh_token"])
    assert (reused.status_code, reused.json()) == (400, {"error": "invalid_grant"})
    assert (await _refresh(sage_anonymous, second.json()["refresh_token"])).status_code == 200


async def test_revoked_refresh_token_is_refused(sage_anonymous: httpx.AsyncClient) -> None:
    tokens = (await _exchange(sage_anonymous, await _code(sage_anonymous))).json()
    revoke = {"refresh_token": tokens["refresh_token"]}
    assert (await sage_anonymous.post("/sandbox/oauth/revoke", json=revoke)).json() == {
        "revoked": True
    }
    assert (await _refresh(sage_anonymous, tokens["refresh_token"])).status_code == 400


async def test_expire_control_route_ends_issued_tokens_but_not_static_ones(
    sage_anonymous: httpx.AsyncClient, sage_client: httpx.AsyncClient
) -> None:
    tokens = (await _exchange(sage_anonymous, await _code(sage_anonymous))).json()

    expired = await sage_anonymous.post("/sandbox/oauth/expire_access_tokens")

    assert expired.json() == {"expired": 1}
    assert (await _businesses(sage_anonymous, tokens["access_token"])).status_code == 401
    assert (await sage_client.get("/businesses")).status_code == 200


async def test_unknown_grant_type_is_invalid_grant(sage_anonymous: httpx.AsyncClient) -> None:
    form = {**CLIENT, "grant_type": "client_credentials"}
    response = await sage_anonymous.post("/oauth/token", data=form)
    assert (response.status_code, response.json()) == (400, {"error": "invalid_grant"})


async def test_missing_or_unknown_bearer_is_401_with_sage_errors(
    sage_anonymous: httpx.AsyncClient, sage: SageSandbox
) -> None:
    missing = await sage_anonymous.get("/v3.1/contacts")
    unknown = await sage_anonymous.get("/v3.1/contacts", headers={"Authorization": "Bearer nope"})

    assert missing.status_code == unknown.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert [e["$message"] for e in missing.json() + unknown.json()] == [
        "No bearer token was sent.",
        "The access token is invalid.",
    ]


async def test_issued_pairs_are_listed_and_one_access_token_can_be_expired_early(
    sage_anonymous: httpx.AsyncClient, sage: SageSandbox
) -> None:
    first = (await _exchange(sage_anonymous, await _code(sage_anonymous))).json()
    second = (await _refresh(sage_anonymous, first["refresh_token"])).json()
    other = (await _exchange(sage_anonymous, await _code(sage_anonymous))).json()

    expired = sage.oauth.expire_access_token(second["access_token"])

    issued = [(t.access_token, t.refresh_token) for t in sage.oauth.issued()]
    assert issued == [
        (first["access_token"], first["refresh_token"]),
        (second["access_token"], second["refresh_token"]),
        (other["access_token"], other["refresh_token"]),
    ]
    assert expired is True and sage.oauth.expire_access_token("never-issued") is False
    assert (await _businesses(sage_anonymous, second["access_token"])).status_code == 401
    assert (await _businesses(sage_anonymous, other["access_token"])).status_code == 200
