"""OAuth 2.0 clients for Sage Accounting and Kommo: authorize URL, code exchange, refresh.

Wire facts (reference/sage-api.md §1.2, reference/kommo-api.md §2.2): Sage's token endpoint is
form-encoded and answers errors as `{"error": "invalid_grant"}` (400); Kommo's lives on each
account's own domain, takes JSON, and answers a reused refresh token with 401 and
`"hint": "Token has been revoked"`. Both rotate refresh tokens on every use.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar
from urllib.parse import urlencode, urlsplit

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from app.clients.http import retry_after_seconds, send
from app.connections.errors import (
    InvalidCallback,
    InvalidGrant,
    OAuthRequestError,
    OAuthTransientError,
)
from app.connections.models import Provider
from app.connections.store import ConnectionKey, TokenSet

log = structlog.get_logger(__name__)
Clock = Callable[[], datetime]
M = TypeVar("M", bound=BaseModel)
_DOMAIN = re.compile(r"^[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?(?::\d{1,5})?$")


@dataclass(frozen=True)
class Connected:
    """What a successful code exchange produced: whose account, and its first token pair."""

    key: ConnectionKey
    display_name: str
    base_url: str | None
    tokens: TokenSet


class OAuthClient(Protocol):
    provider: Provider

    def authorize_url(self, *, state: str) -> str: ...

    async def exchange(self, *, code: str, referer: str | None) -> Connected: ...

    async def refresh(self, *, refresh_token: str, base_url: str | None) -> TokenSet: ...


class TokenResponse(BaseModel):
    access_token: SecretStr
    refresh_token: SecretStr | None = None
    expires_in: int | None = None
    # Sage only; Kommo documents no expiry for its refresh tokens.
    refresh_token_expires_in: int | None = None

    def tokens(self, issued_at: datetime) -> TokenSet:
        def expiry(seconds: int | None) -> datetime | None:
            return None if seconds is None else issued_at + timedelta(seconds=seconds)

        refresh = self.refresh_token
        return TokenSet(
            access_token=self.access_token.get_secret_value(),
            refresh_token=refresh.get_secret_value() if refresh is not None else None,
            access_expires_at=expiry(self.expires_in),
            refresh_expires_at=expiry(self.refresh_token_expires_in),
        )


@dataclass(frozen=True)
class SageOAuthConfig:
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str
    api_base_url: str
    authorize_url: str = "https://www.sageone.com/oauth2/auth/central?filter=apiv3.1"
    token_url: str = "https://oauth.accounting.sage.com/token"  # noqa: S105 - a URL
    scope: str = "full_access"
    # When set, the connect flow must find this business among those the user granted.
    business_id: str | None = None


class SageBusiness(BaseModel):
    id: str
    displayed_as: str | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.displayed_as or self.id


class BusinessPage(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    items: list[SageBusiness] = Field(default_factory=list, alias="$items")


class SageOAuth:
    provider = Provider.SAGE

    def __init__(self, config: SageOAuthConfig, http: httpx.AsyncClient, *, clock: Clock) -> None:
        self.config = config
        self._http = http
        self._clock = clock

    def authorize_url(self, *, state: str) -> str:
        params = {
            "client_id": self.config.client_id,
            "response_type": "code",
            "redirect_uri": self.config.redirect_uri,
            "scope": self.config.scope,
            "state": state,
        }
        return _with_query(self.config.authorize_url, params)

    async def exchange(self, *, code: str, referer: str | None) -> Connected:
        grant = {"grant_type": "authorization_code", "code": code}
        tokens = await self._token({**grant, "redirect_uri": self.config.redirect_uri})
        business = pick_business(await self.businesses(tokens.access_token), self.config)
        key = ConnectionKey(Provider.SAGE, business.id)
        return Connected(key=key, display_name=business.label, base_url=None, tokens=tokens)

    async def refresh(self, *, refresh_token: str, base_url: str | None) -> TokenSet:
        return await self._token({"grant_type": "refresh_token", "refresh_token": refresh_token})

    async def _token(self, grant: dict[str, str]) -> TokenSet:
        issued_at = self._clock()  # before the request: the expiry errs on the early side
        client = {"client_id": self.config.client_id, "client_secret": self.config.client_secret}
        response = await send(
            self._http,
            "sage",
            "POST",
            self.config.token_url,
            transient=OAuthTransientError,
            data={**client, **grant},
        )
        raise_for_token_error("sage", response)
        return _token_response("sage", response).tokens(issued_at)

    async def businesses(self, access_token: str) -> list[SageBusiness]:
        """The businesses the token's user granted (`GET /businesses`)."""
        url = f"{self.config.api_base_url.rstrip('/')}/businesses"
        headers = {"Authorization": f"Bearer {access_token}"}
        response = await send(
            self._http, "sage", "GET", url, transient=OAuthTransientError, headers=headers
        )
        raise_for_api_error("sage", response)
        return _parse("sage", BusinessPage, response).items


def pick_business(businesses: list[SageBusiness], config: SageOAuthConfig) -> SageBusiness:
    """The configured business if the user granted it; otherwise the only (or first) one."""
    if not businesses:
        raise OAuthRequestError("sage", "this Sage user has access to no business")
    if config.business_id is None:
        if len(businesses) > 1:
            log.warning(
                "connection.business_chosen",
                business_id=businesses[0].id,
                others=[b.id for b in businesses[1:]],
                detail="set SAGE_BUSINESS_ID to choose another",
            )
        return businesses[0]
    for business in businesses:
        if business.id == config.business_id:
            return business
    granted = ", ".join(b.id for b in businesses)
    raise OAuthRequestError(
        "sage",
        f"business {config.business_id} (SAGE_BUSINESS_ID) is not among those this user "
        f"granted: {granted}",
    )


@dataclass(frozen=True)
class KommoOAuthConfig:
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str
    authorize_url: str = "https://www.kommo.com/oauth"
    mode: str = "post_message"
    token_path: str = "/oauth2/access_token"  # noqa: S105 - a path
    # The callback's `referer` names the account's domain; the bridge then sends its client
    # secret there, so only these domains (and their subdomains) are believed.
    allowed_domains: tuple[str, ...] = ("kommo.com", "amocrm.ru", "amocrm.com")
    scheme: str = "https"


class KommoAccount(BaseModel):
    id: int
    name: str | None = None
    subdomain: str | None = None


class KommoOAuth:
    provider = Provider.KOMMO

    def __init__(self, config: KommoOAuthConfig, http: httpx.AsyncClient, *, clock: Clock) -> None:
        self.config = config
        self._http = http
        self._clock = clock

    def authorize_url(self, *, state: str) -> str:
        params = {"client_id": self.config.client_id, "state": state, "mode": self.config.mode}
        return _with_query(self.config.authorize_url, params)

    async def exchange(self, *, code: str, referer: str | None) -> Connected:
        domain = self.account_domain(referer)
        base_url = f"{self.config.scheme}://{domain}"
        tokens = await self._token(base_url, {"grant_type": "authorization_code", "code": code})
        account = await self._account(base_url, tokens.access_token)
        key = ConnectionKey(Provider.KOMMO, str(account.id))
        return Connected(key=key, display_name=domain, base_url=base_url, tokens=tokens)

    async def refresh(self, *, refresh_token: str, base_url: str | None) -> TokenSet:
        if base_url is None:
            raise OAuthRequestError("kommo", "the connection has no account domain")
        grant = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        return await self._token(base_url, grant)

    def account_domain(self, referer: str | None) -> str:
        """The account's domain from the callback's `referer`, if it is one we may trust."""
        raw = (referer or "").strip().lower()
        domain = urlsplit(raw).netloc if "://" in raw else raw
        host = domain.rsplit(":", 1)[0]
        allowed = any(host == d or host.endswith(f".{d}") for d in self.config.allowed_domains)
        if not _DOMAIN.match(domain) or not allowed:
            raise InvalidCallback(
                f"referer {referer!r} is not a Kommo account domain "
                f"(allowed: {', '.join(self.config.allowed_domains)})"
            )
        return domain

    async def _token(self, base_url: str, grant: dict[str, str]) -> TokenSet:
        issued_at = self._clock()
        body = {
            "client_id": self.config.client_id,
            "client_secret": self.config.client_secret,
            "redirect_uri": self.config.redirect_uri,
            **grant,
        }
        url = f"{base_url.rstrip('/')}{self.config.token_path}"
        response = await send(
            self._http, "kommo", "POST", url, transient=OAuthTransientError, json=body
        )
        raise_for_token_error("kommo", response)
        return _token_response("kommo", response).tokens(issued_at)

    async def _account(self, base_url: str, access_token: str) -> KommoAccount:
        url = f"{base_url.rstrip('/')}/api/v4/account"
        headers = {"Authorization": f"Bearer {access_token}"}
        response = await send(
            self._http, "kommo", "GET", url, transient=OAuthTransientError, headers=headers
        )
        raise_for_api_error("kommo", response)
        return _parse("kommo", KommoAccount, response)


def raise_for_token_error(upstream: str, response: httpx.Response) -> None:
    """invalid_grant (or Kommo's revoked/expired hint) means the grant is dead; 429 and 5xx
    are worth retrying; any other refusal is the provider's word, quoted."""
    raise_for_api_error(upstream, response, grant_errors=True)


def raise_for_api_error(
    upstream: str, response: httpx.Response, *, grant_errors: bool = False
) -> None:
    if response.is_success:
        return
    status = response.status_code
    message = _error_message(response)
    if status == 429 or status >= 500:
        raise OAuthTransientError(
            upstream, message, status=status, retry_after=retry_after_seconds(response)
        )
    if grant_errors and _is_dead_grant(response):
        raise InvalidGrant(upstream, message, status=status)
    raise OAuthRequestError(upstream, message, status=status)


def _is_dead_grant(response: httpx.Response) -> bool:
    body = _json_object(response)
    if body.get("error") == "invalid_grant":
        return True
    hint = str(body.get("hint") or "").lower()
    return response.status_code in (400, 401) and ("revoked" in hint or "expired" in hint)


def _error_message(response: httpx.Response) -> str:
    """Sage: `error` (+ `error_description`); Kommo: problem+json `title`/`detail`/`hint`."""
    body = _json_object(response)
    keys = ("error", "error_description", "title", "detail", "hint", "$message")
    parts = [str(body[k]) for k in keys if body.get(k)]
    if not parts and isinstance(body.get("items"), list):
        parts = [str(item.get("$message")) for item in body["items"] if isinstance(item, dict)]
    return f"HTTP {response.status_code}: {'; '.join(parts) or response.reason_phrase}"


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    if isinstance(body, list):  # Sage's API errors are an array of {$message, …}
        return {"items": body}
    return body if isinstance(body, dict) else {}


def _token_response(upstream: str, response: httpx.Response) -> TokenResponse:
    return _parse(upstream, TokenResponse, response)


def _parse(upstream: str, model: type[M], response: httpx.Response) -> M:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        # The error text names fields, never values: a token must not reach a log through it.
        fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
        raise OAuthTransientError(
            upstream, f"unexpected {model.__name__} body (fields: {fields or 'not JSON'})"
        ) from None


def _with_query(url: str, params: dict[str, str]) -> str:
    return f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
