"""The console in a real browser: Debian's chromium, driven by Playwright, against the bridge's
API and worker started as production starts them (`python -m app.cli api|worker`: uvicorn on
127.0.0.1), the suite's database and Redis, and the sandbox Kommo and Sage over real sockets.

Playwright rather than Selenium: its async API runs in the suite's event loop beside the
sandbox, and its assertions wait for what the page shows instead of sleeping. It launches
/usr/bin/chromium itself (`playwright install` is never run). A screenshot of every page is
saved to test-artifacts/screenshots/, which CI keeps.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html import escape
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect
from sqlalchemy import text

from app.cli import migrate_database
from app.connections.crypto import generate_key
from app.db import create_engine
from app.settings import Settings
from bench.procs import (
    WEBHOOK_SECRET,
    Process,
    Upstreams,
    bridge_env,
    free_port,
    start_api,
    start_worker,
    stopping,
)
from sandbox.runner import RunningSandbox, run_sandbox, serve_app
from sandbox.seed import (
    LEAD_SAMPLE,
    LEAD_SECOND,
    LEAD_UNMAPPED,
    STATUS_RAISE_INVOICE,
    register_webhook,
)
from tests.conftest import OPS_TOKEN, TABLES

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
AUTH = {"Authorization": f"Bearer {OPS_TOKEN}"}
SAGE_CLIENT = ("sandbox-sage-client", "sandbox-sage-secret")


def _chromium_or_skip() -> None:
    if Path(CHROMIUM).is_file():
        return
    why = f"no chromium at {CHROMIUM}: `apt-get install chromium` (.ci/run installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the browser tests, but there is {why}")
    pytest.skip(why)


pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Stack:
    sandbox: RunningSandbox
    url: str
    processes: tuple[Process, ...]


@pytest.fixture(scope="module")
def console_database(tmp_path_factory: pytest.TempPathFactory, postgres_url: str | None) -> str:
    if postgres_url:
        return postgres_url
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('console') / 'bridge.db'}"
    migrate_database(Settings(database_url=url))
    return url


async def _empty(url: str, redis_url: str) -> None:
    if url.startswith("postgresql"):
        engine = create_engine(url)
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
        await engine.dispose()
    import redis.asyncio as aioredis

    async with aioredis.Redis.from_url(redis_url) as r:
        await r.flushdb()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    console_database: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    _chromium_or_skip()
    await _empty(console_database, redis_url)
    logs = tmp_path_factory.mktemp("console-logs")
    async with run_sandbox() as sb, serve_app(_consent_app(sb)) as consent_url:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = bridge_env(
            database_url=console_database,
            redis_url=redis_url,
            api_port=port,
            upstreams=Upstreams(sb.kommo_url, sb.sage_api_url),
            data_dir=logs,
        )
        env.update(
            OPS_API_TOKEN=OPS_TOKEN,
            PUBLIC_BASE_URL=url,
            RETRY_DELAYS_SECONDS="[1]",
            SWEEPER_INTERVAL_SECONDS="2",
            CONNECTION_ENCRYPTION_KEYS=generate_key(),
            SAGE_OAUTH_CLIENT_ID=SAGE_CLIENT[0],
            SAGE_OAUTH_CLIENT_SECRET=SAGE_CLIENT[1],
            SAGE_OAUTH_TOKEN_URL=f"{sb.sage_url}/oauth/token",
            SAGE_OAUTH_AUTHORIZE_URL=f"{consent_url}/consent",
        )
        register_webhook(sb.kommo.state, f"{url}/webhooks/kommo/{WEBHOOK_SECRET}")
        api = await start_api(env, logs / "api.log", port)
        worker = await start_worker(env, logs / "worker.log")
        async with stopping(api, worker):
            yield Stack(sb, url, (api, worker))


def _consent_app(sb: RunningSandbox) -> FastAPI:
    """Sage's consent page, stood in for: Allow sends the browser to the redirect URI with a
    code the sandbox Sage issued for it, as Sage's own page would."""
    app = FastAPI()

    @app.get("/consent", response_class=HTMLResponse)
    async def consent(client_id: str, redirect_uri: str, state: str) -> str:
        code = sb.sage.oauth.issue_code(client_id=client_id, redirect_uri=redirect_uri)
        allow = f"{redirect_uri}?{urlencode({'code': code, 'state': state})}"
        return f'<h1>Sage consent (stand-in)</h1><a href="{escape(allow)}">Allow</a>'

    return app


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deals(stack: Stack) -> dict[str, int]:
    """Three deals moved to Raise Invoice: one invoiced (after a 429 from Kommo), one with an
    unmapped product, one Sage refused (its event failed)."""
    stack.sandbox.kommo.faults.rate_limit_next("GET", "/api/v4/leads/{id}", retry_after=1)
    await _move(stack, LEAD_SAMPLE)
    await _wait_for(stack, LEAD_SAMPLE, "invoiced")
    await _move(stack, LEAD_UNMAPPED)
    await _wait_for(stack, LEAD_UNMAPPED, "needs_mapping")
    stack.sandbox.sage.faults.refuse_next(
        "POST", "/v3.1/sales_invoices", status=422, message="The contact is on hold"
    )
    await _move(stack, LEAD_SECOND)
    await _wait_for(stack, LEAD_SECOND, "failed")
    return {"invoiced": LEAD_SAMPLE, "unmapped": LEAD_UNMAPPED, "failed": LEAD_SECOND}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(stack: Stack) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        await launched.close()


@pytest_asyncio.fixture(loop_scope="module")
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    opened = await browser.new_context(viewport={"width": 1280, "height": 900})
    yield opened
    await opened.close()


async def _move(stack: Stack, lead_id: int) -> None:
    async with httpx.AsyncClient() as http:
        moved = await http.post(
            f"{stack.sandbox.kommo_url}/sandbox/leads/{lead_id}/move",
            json={"status_id": STATUS_RAISE_INVOICE},
        )
    moved.raise_for_status()


async def _wait_for(stack: Stack, lead_id: int, state: str, timeout: float = 30) -> None:
    """Until GET /ops/retries?state= lists the deal's event."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=stack.url, headers=AUTH) as http:
        while time.monotonic() < deadline:
            page = (await http.get("/ops/retries", params={"state": state})).json()
            if any(item["deal_id"] == str(lead_id) for item in page["items"]):
                return
            await asyncio.sleep(0.2)
    logs = "\n".join(p.log.read_text()[-3000:] for p in stack.processes)
    raise AssertionError(f"deal {lead_id} never reached {state}; bridge logs:\n{logs}")


async def _log_in(page: Page, stack: Stack) -> None:
    await page.goto(f"{stack.url}/console")
    await expect(page).to_have_url(f"{stack.url}/console/login?next=%2Fconsole")
    await page.fill("#token", OPS_TOKEN)
    await page.click("button:text('Log in')")
    await expect(page.locator("h1")).to_have_text("Dashboard")


async def _shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SHOTS / f"{name}.png", full_page=True)


async def test_login_then_every_page(
    stack: Stack, deals: dict[str, int], context: BrowserContext
) -> None:
    page = await context.new_page()
    await page.goto(f"{stack.url}/console/queue")
    await _shot(page, "01-login")
    await page.fill("#token", "not-the-ops-token")
    await page.click("button:text('Log in')")
    await expect(page.locator("[role=alert]")).to_have_text("That is not the ops token.")
    await page.fill("#token", OPS_TOKEN)
    await page.click("button:text('Log in')")

    await expect(page.locator("h1")).to_have_text("Retry queue")  # where it was going
    (cookie,) = [c for c in await context.cookies() if c["name"] == "sagebridge_console"]
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/console")
    assert cookie["expires"] > time.time() + 7 * 3600

    await page.click("nav >> text=Dashboard")
    await expect(page.locator(".tile").nth(1)).to_contain_text("Invoices, last 24 h 1")
    assert await page.locator("svg rect.bar").count() == 1
    assert await page.locator("svg circle.dot.p99").count() == 1
    await expect(page.locator(".counts")).to_contain_text("failed 1")
    await expect(page.locator("#upstreams + table")).to_contain_text("kommo")
    kommo = page.locator("#upstreams + table tr", has_text="kommo")
    await expect(kommo.locator("td").nth(3)).to_have_text("1")  # the 429
    await _shot(page, "02-dashboard")

    await page.click("nav >> text=Queue")
    rows = page.locator("table.queue tbody tr")
    await expect(rows).to_have_count(2)
    failed = rows.filter(has_text=str(deals["failed"]))
    await expect(failed).to_contain_text("The contact is on hold")
    await expect(failed).to_contain_text("0 of 2")
    await _shot(page, "03-queue")
    await page.set_viewport_size({"width": 800, "height": 900})
    await _shot(page, "03-queue-narrow")
    await page.set_viewport_size({"width": 1280, "height": 900})

    await page.fill("input[name=deal_id]", str(deals["invoiced"]))
    await page.click("button:text('Open deal')")
    await expect(page.locator("h1")).to_contain_text(f"Deal {deals['invoiced']}")
    steps = page.locator("ol.timeline li")
    await expect(steps.first).to_contain_text("Webhook received: leads.status")
    await expect(page.locator("ol.timeline")).to_contain_text("created in Sage")
    await expect(page.locator("ol.timeline")).to_contain_text("→ 429")
    body = page.locator("details", has_text="request body").first
    await expect(body.locator("pre")).not_to_be_visible()
    await body.locator("summary").click()
    await expect(body.locator("pre")).to_be_visible()
    await _shot(page, "04-deal")

    await page.click("nav >> text=Mapping")
    await expect(page.locator("#in-force")).to_contain_text("In force: version 1")
    await page.click("button:text('Ask Kommo and Sage')")
    await expect(page.locator("#unmapped + table")).to_contain_text("Mystery box")
    await expect(page.locator("pre.yaml")).to_contain_text("sku: MYST-1")
    await _shot(page, "05-mapping")

    await page.click("nav >> text=Connections")
    await expect(page.locator("button:text('Connect Sage')")).to_be_visible()
    await _shot(page, "06-connections")


async def test_replay_from_the_queue_changes_the_event_state(
    stack: Stack, deals: dict[str, int], context: BrowserContext
) -> None:
    page = await context.new_page()
    await _log_in(page, stack)
    await page.goto(f"{stack.url}/console/queue?state=failed")
    row = page.locator("table.queue tbody tr", has_text=str(deals["failed"]))
    await expect(row.locator(".state")).to_have_text("failed")

    await row.locator("button:text('Replay')").click()

    await expect(page.locator(".notice")).to_contain_text("replayed: it is pending")
    await page.goto(f"{stack.url}/console/deals/{deals['failed']}")
    state = page.locator("section.event h2 .state").first
    deadline = time.monotonic() + 30
    while await state.inner_text() != "invoiced" and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        await page.reload()
    await expect(state).to_have_text("invoiced")
    await expect(page.locator("#invoice")).to_be_visible()
    await expect(page.locator("ol.timeline")).to_contain_text("Ops: replay")
    await _shot(page, "07-replayed")


async def test_a_post_without_the_csrf_token_is_refused(
    stack: Stack, deals: dict[str, int], context: BrowserContext
) -> None:
    page = await context.new_page()
    await _log_in(page, stack)
    await page.goto(f"{stack.url}/console/queue?state=needs_mapping")
    row = page.locator("table.queue tbody tr", has_text=str(deals["unmapped"]))
    await row.locator("input[name=csrf_token]").evaluate("input => input.remove()")

    await row.locator("button:text('Replay')").click()

    await expect(page.locator("h1")).to_have_text(
        "Refused: this form did not come from the console"
    )
    await _shot(page, "08-csrf-refused")
    await page.goto(f"{stack.url}/console/queue?state=needs_mapping")
    await expect(row.locator(".state")).to_have_text("needs mapping")  # nothing was done


async def test_connect_runs_the_oauth_flow_in_this_browser(
    stack: Stack, context: BrowserContext
) -> None:
    page = await context.new_page()
    await _log_in(page, stack)
    await page.goto(f"{stack.url}/console/connections")

    await page.click("button:text('Connect Sage')")

    await expect(page.locator("h1")).to_have_text("Sage consent (stand-in)")
    query = parse_qs(urlsplit(page.url).query)
    redirect_uri = f"{stack.url}/ops/connections/sage/callback"
    assert (query["client_id"], query["redirect_uri"]) == ([SAGE_CLIENT[0]], [redirect_uri])
    async with page.expect_response(f"{redirect_uri}?*") as answer:
        await page.click("text=Allow")
    callback = await answer.value
    assert callback.status == 200
    assert (await callback.json())["state"] == "active"

    await page.goto(f"{stack.url}/console/connections")
    row = page.locator("tbody tr", has_text="sage")
    await expect(row.locator(".state")).to_have_text("active")
    await expect(row).to_contain_text("days")
    await expect(page.locator("button:text('Reconnect Sage')")).to_be_visible()
    await _shot(page, "09-connected")


async def test_logout_ends_the_session(stack: Stack, context: BrowserContext) -> None:
    page = await context.new_page()
    await _log_in(page, stack)

    await page.click("button:text('Log out')")

    await expect(page.locator("[role=status]")).to_have_text("You are logged out.")
    await page.goto(f"{stack.url}/console/queue")
    await expect(page.locator("#token")).to_be_visible()
