"""The connect flow over HTTP: start → the browser opens the link (cookie) → consent →
callback (same browser) → stored connection."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from app.connections import flow
from app.connections.models import Provider
from app.connections.runtime import Connections
from sandbox.sage import SageSandbox
from sandbox.sage.models import Business
from tests.connections.conftest import (
    BUSINESS_NAME,
    CLIENT_ID,
    KOMMO_ACCOUNT_ID,
    OAuthProvider,
    another_process,
    make_config,
    ops,
)
from tests.upstreams import BUSINESS_ID

CALLBACK = "http://bridge.test/ops/connections/{}/callback"


async def _start(
    api: httpx.AsyncClient, provider: str, *, open_link: bool = True
) -> dict[str, str]:
    """POST start (as ops do with curl), then open the link in `api`, the browser."""
    response = await api.post(f"/ops/connections/{provider}/start", headers=ops())
    assert response.status_code == 200, response.text
    body: dict[str, str] = response.json()
    if open_link:
        body["provider_url"] = await _open(api, body["authorize_url"])
    return body


async def _open(browser: httpx.AsyncClient, link: str) -> str:
    opened = await browser.get(link)
    assert opened.status_code == 303, opened.text
    return opened.headers["location"]


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


async def test_sage_connect_flow_stores_the_business_it_picked(
    api: httpx.AsyncClient, sage_oauth: OAuthProvider
) -> None:
    started = await _start(api, "sage")
    assert started["authorize_url"] == (
        f"http://bridge.test/ops/connections/sage/authorize?state={started['state']}"
    )
    assert started["provider_url"].startswith(
        "https://www.sageone.com/oauth2/auth/central?filter=apiv3.1&"
    )
    assert _query(started["provider_url"]) == {
        "filter": ["apiv3.1"],
        "client_id": [CLIENT_ID],
        "response_type": ["code"],
        "redirect_uri": [CALLBACK.format("sage")],
        "scope": ["full_access"],
        "state": [started["state"]],
    }

    code = sage_oauth.issue_code(CALLBACK.format("sage"))
    response = await api.get(
        "/ops/connections/sage/callback", params={"code": code, "state": started["state"]}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert {k: body[k] for k in ("provider", "account", "name", "kind", "state")} == {
        "provider": "sage",
        "account": BUSINESS_ID,
        "name": BUSINESS_NAME,
        "kind": "oauth",
        "state": "active",
    }
    # The sandbox logs secrets REDACTED; that it took them shows they were the right ones.
    assert sage_oauth.token_bodies[0] == {
        "client_id": CLIENT_ID,
        "client_secret": "REDACTED",
        "grant_type": "authorization_code",
        "code": "REDACTED",
        "redirect_uri": CALLBACK.format("sage"),
    }
    listed = await api.get("/ops/connections", headers=ops())
    assert [(c["provider"], c["account"], c["state"]) for c in listed.json()] == [
        ("sage", BUSINESS_ID, "active")
    ]
    for text in (response.text, listed.text):
        assert not any(t in text for pair in sage_oauth.issued for t in pair)


async def test_a_state_is_good_once(api: httpx.AsyncClient, sage_oauth: OAuthProvider) -> None:
    started = await _start(api, "sage")
    params = {"code": sage_oauth.issue_code(CALLBACK.format("sage")), "state": started["state"]}
    assert (await api.get("/ops/connections/sage/callback", params=params)).status_code == 200

    params["code"] = sage_oauth.issue_code(CALLBACK.format("sage"))
    replayed = await api.get("/ops/connections/sage/callback", params=params)

    assert replayed.status_code == 400
    assert replayed.json() == {
        "error": "bad_request",
        "detail": "the state is unknown, expired or already used; start again",
    }


@pytest.mark.parametrize(
    "state", ["x" * 43, "short", "../../etc", "a" * 200], ids=["unknown", "short", "odd", "long"]
)
async def test_unknown_or_malformed_state_is_400(
    api: httpx.AsyncClient, sage_oauth: OAuthProvider, state: str
) -> None:
    params = {"code": sage_oauth.issue_code(CALLBACK.format("sage")), "state": state}
    response = await api.get("/ops/connections/sage/callback", params=params)

    assert response.status_code == 400
    assert sage_oauth.token_bodies == []


async def test_an_expired_state_is_400(
    api: httpx.AsyncClient, sage_oauth: OAuthProvider, connections: Connections
) -> None:
    started = await _start(api, "sage")
    await connections.redis.delete(flow.state_key(Provider.SAGE, started["state"]))
    params = {"code": sage_oauth.issue_code(CALLBACK.format("sage")), "state": started["state"]}

    assert (await api.get("/ops/connections/sage/callback", params=params)).status_code == 400


async def test_a_kommo_state_does_not_open_the_sage_callback_nor_is_spent_by_it(
    api: httpx.AsyncClient, sage_oauth: OAuthProvider, kommo_oauth: OAuthProvider
) -> None:
    started = await _start(api, "kommo")
    params = {"code": sage_oauth.issue_code(CALLBACK.format("sage")), "state": started["state"]}

    response = await api.get("/ops/connections/sage/callback", params=params)

    assert (response.status_code, response.json()["detail"]) == (
        400,
        "the state was issued for kommo, not sage",
    )
    kommo = {
        "code": kommo_oauth.issue_code(CALLBACK.format("kommo")),
        "state": started["state"],
        "referer": "testco.kommo.com",
    }
    assert (await api.get("/ops/connections/kommo/callback", params=kommo)).status_code == 200


async def test_the_link_sets_a_private_cookie_for_this_provider_only(
    api: httpx.AsyncClient,
) -> None:
    started = await _start(api, "sage", open_link=False)

    opened = await api.get(started["authorize_url"])

    cookie = opened.headers["set-cookie"]
    name = cookie.split("=", 1)[0]
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert name == flow.BROWSER_COOKIE
    assert attributes == {"httponly", "max-age=600", "path=/ops/connections/sage", "samesite=lax"}


async def test_a_callback_from_another_browser_is_400_and_spends_nothing(
    api: httpx.AsyncClient, sage_oauth: OAuthProvider, bridge: FastAPI
) -> None:
    started = await _start(api, "sage")
    params = {"code": sage_oauth.issue_code(CALLBACK.format("sage")), "state": started["state"]}
    transport = httpx.ASGITransport(app=bridge)
    async with httpx.AsyncClient(transport=transport, base_url="http://bridge.test") as other:
        refused = await other.get("/ops/connections/sage/callback", params=params)
        other.cookies.set(flow.BROWSER_COOKIE, "not-the-cookie-of-the-browser-that-opened-it")
        forged = await other.get("/ops/connections/sage/callback", params=params)

    accepted = await api.get("/ops/connections/sage/callback", params=params)

    assert (refused.status_code, forged.status_code, accepted.status_code) == (400, 400, 200)
    assert refused.json()["detail"] == (
        "this browser did not open the connect link of this state: finish in the browser that "
        "opened the authorize_url from start, or start again"
    )
    assert len(sage_oauth.token_bodies) == 1


async def test_a_link_opens_in_one_browser_only(
    api: httpx.AsyncClient, bridge: FastAPI, sage_oauth: OAuthProvider
) -> None:
    started = await _start(api, "sage")
    transport = httpx.ASGITransport(app=bridge)
    async with httpx.AsyncClient(transport=transport, base_url="http://bridge.test") as other:
        second = await other.get(started["authorize_url"])

    assert (second.status_code, second.json()["detail"]) == (
        400,
        "this connect link was already opened in another browser; start again to get a new one",
    )
    assert "set-cookie" not in second.headers


async def test_start_needs_the_ops_token_and_the_callback_does_not(
    api: httpx.AsyncClient,
) -> None:
    assert (await api.post("/ops/connections/sage/start")).status_code == 401
    assert (await api.get("/ops/connections")).status_code == 401
    no_token = await api.get("/ops/connections/sage/callback", params={"state": "x" * 43})
    assert no_token.status_code == 400  # judged by its state, not by a header
    link = await api.get("/ops/connections/sage/authorize", params={"state": "x" * 43})
    assert (link.status_code, link.json()["detail"]) == (
        400,
        "the connect link is unknown or expired; start again",
    )


async def test_unknown_provider_is_404(api: httpx.AsyncClient) -> None:
    started = await api.post("/ops/connections/zoho/start", headers=ops())
    callback = await api.get("/ops/connections/zoho/callback", params={"state": "x" * 43})

    assert (started.status_code, callback.status_code) == (404, 404)
    assert started.json()["detail"] == "no provider 'zoho' (known: sage, kommo)"


async def test_a_refused_code_is_502_with_the_providers_message(
    api: httpx.AsyncClient, sage_oauth: OAuthProvider
) -> None:
    started = await _start(api, "sage")
    params = {"code": "code-never-issued", "state": started["state"]}

    response = await api.get("/ops/connections/sage/callback", params=params)

    assert response.status_code == 502
    assert response.json() == {"error": "bad_gateway", "detail": "sage: HTTP 400: invalid_grant"}


async def test_a_declined_consent_is_400(api: httpx.AsyncClient) -> None:
    started = await _start(api, "sage")
    params = {"state": started["state"], "error": "access_denied"}

    response = await api.get("/ops/connections/sage/callback", params=params)

    assert (response.status_code, response.json()["detail"]) == (
        400,
        "sage sent no code (access_denied)",
    )


async def test_the_configured_business_is_chosen_among_several(
    api: httpx.AsyncClient,
    sage_oauth: OAuthProvider,
    connections: Connections,
    bridge: FastAPI,
) -> None:
    other = Business("c" * 32, "Other Ltd", "GBP", "GB", datetime(2025, 1, 1, tzinfo=UTC))
    assert isinstance(sage_oauth.sandbox, SageSandbox)
    sage_oauth.sandbox.state.add_business(other)
    bridge.state.connections = another_process(connections, sage_business_id="c" * 32)

    started = await _start(api, "sage")
    params = {"code": sage_oauth.issue_code(CALLBACK.format("sage")), "state": started["state"]}
    response = await api.get("/ops/connections/sage/callback", params=params)

    assert (response.json()["account"], response.json()["name"]) == ("c" * 32, "Other Ltd")


async def test_a_configured_business_the_user_did_not_grant_is_502(
    api: httpx.AsyncClient, sage_oauth: OAuthProvider, connections: Connections, bridge: FastAPI
) -> None:
    bridge.state.connections = another_process(connections, sage_business_id="d" * 32)
    started = await _start(api, "sage")
    params = {"code": sage_oauth.issue_code(CALLBACK.format("sage")), "state": started["state"]}

    response = await api.get("/ops/connections/sage/callback", params=params)

    assert response.status_code == 502
    assert response.json()["detail"] == (
        f"sage: business {'d' * 32} (SAGE_BUSINESS_ID) is not among those this user granted: "
        f"{BUSINESS_ID}"
    )


async def test_kommo_connect_flow_uses_the_referer_domain(
    api: httpx.AsyncClient, kommo_oauth: OAuthProvider
) -> None:
    started = await _start(api, "kommo")
    assert started["provider_url"].startswith("https://www.kommo.com/oauth?")
    assert _query(started["provider_url"]) == {
        "client_id": [CLIENT_ID],
        "state": [started["state"]],
        "mode": ["post_message"],
    }
    code = kommo_oauth.issue_code(CALLBACK.format("kommo"))
    params = {"code": code, "state": started["state"], "referer": "testco.kommo.com"}

    response = await api.get("/ops/connections/kommo/callback", params=params)

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["account"], body["name"], body["base_url"], body["refresh_expires_at"]) == (
        str(KOMMO_ACCOUNT_ID),
        "testco.kommo.com",
        "https://testco.kommo.com",
        None,
    )
    assert kommo_oauth.token_hosts == ["testco.kommo.com"]
    assert kommo_oauth.token_bodies[0] == {
        "client_id": CLIENT_ID,
        "client_secret": "REDACTED",
        "redirect_uri": CALLBACK.format("kommo"),
        "grant_type": "authorization_code",
        "code": "REDACTED",
    }


@pytest.mark.parametrize(
    "referer", ["evil.example", "kommo.com.evil.example", "testco.kommo.com/path", None]
)
async def test_kommo_secret_goes_only_to_a_kommo_domain(
    api: httpx.AsyncClient, kommo_oauth: OAuthProvider, referer: str | None
) -> None:
    started = await _start(api, "kommo")
    params = {"code": kommo_oauth.issue_code(CALLBACK.format("kommo")), "state": started["state"]}
    if referer is not None:
        params["referer"] = referer

    response = await api.get("/ops/connections/kommo/callback", params=params)

    assert response.status_code == 400
    assert "is not a Kommo account domain" in response.json()["detail"]
    assert kommo_oauth.token_bodies == []


async def test_an_unconfigured_provider_is_409(
    api: httpx.AsyncClient, connections: Connections, bridge: FastAPI
) -> None:
    bridge.state.connections = another_process(
        connections, kommo_oauth_client_id=None, kommo_oauth_client_secret=None
    )

    response = await api.post("/ops/connections/kommo/start", headers=ops())

    assert response.status_code == 409
    assert response.json()["detail"] == (
        "kommo OAuth is not configured: set KOMMO_OAUTH_CLIENT_ID and KOMMO_OAUTH_CLIENT_SECRET"
    )


async def test_without_encryption_keys_nothing_can_be_connected(
    api: httpx.AsyncClient, connections: Connections, bridge: FastAPI
) -> None:
    bridge.state.connections = Connections(
        make_config(connection_encryption_keys=None),
        connections.sessionmaker,
        connections.redis,
        connections._http,
    )

    response = await api.post("/ops/connections/sage/start", headers=ops())

    assert response.status_code == 409
    assert "CONNECTION_ENCRYPTION_KEYS is not set" in response.json()["detail"]


async def test_a_kommo_long_lived_token_is_stored_with_its_jwt_expiry(
    api: httpx.AsyncClient,
) -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjE4OTM0NTYwMDB9.c2lnbmF0dXJl"  # exp 2030-01-01
    body = {"base_url": "https://testco.kommo.com", "account_id": KOMMO_ACCOUNT_ID, "token": token}

    response = await api.put("/ops/connections/kommo/long-lived", json=body, headers=ops())

    assert response.status_code == 200, response.text
    stored = response.json()
    assert (stored["kind"], stored["account"], stored["access_expires_at"]) == (
        "long_lived",
        str(KOMMO_ACCOUNT_ID),
        "2030-01-01T00:00:00Z",
    )
    assert token not in response.text
    unauthenticated = await api.put("/ops/connections/kommo/long-lived", json=body)
    assert unauthenticated.status_code == 401
