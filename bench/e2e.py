"""End to end: deals moved to Raise Invoice in the sandbox Kommo, invoices in the sandbox Sage,
with both simulators enforcing their documented rate limits (Kommo 7 requests/s, Sage 200/min).

The bridge's API and worker run as real processes; the simulators serve from this process, so
their state and request logs are read directly. A deal's trigger time is the moment it is moved;
its invoice time is when Kommo answered the PATCH that wrote the invoice number onto it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.infra import Infra
from bench.kommo import add_deals, move_to_invoice_stage
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
from bench.stats import Latency
from sandbox.common.ratelimit import RateLimit
from sandbox.common.requestlog import RecordedRequest
from sandbox.runner import RunningSandbox, run_sandbox
from sandbox.seed import (
    FIELD_INVOICE_NUMBER,
    SAGE_BUSINESS_ID,
    demo_kommo_state,
    register_webhook,
)

# The upstream routes the bridge calls (invoicing, tasks, reconciliation, status polling);
# `latency` faults are armed on exactly these.
KOMMO_ROUTES = (
    "/api/v4/leads",
    "/api/v4/leads/{id}",
    "/api/v4/contacts/{id}",
    "/api/v4/catalogs/{id}/elements",
    "/api/v4/tasks",
    "/api/v4/webhooks",
)
SAGE_ROUTES = (
    "/v3.1/contacts",
    "/v3.1/sales_invoices",
    "/v3.1/sales_invoices/{id}",
    "/v3.1/tax_rates",
    "/v3.1/ledger_accounts",
    "/v3.1/artefact_statuses",
)
POLL_S = 0.25
# Room for one retry after a 429 or 5xx (the first retry waits 60 s by default).
DEADLINE_SLACK_S = 75.0
_ID_SEGMENT = re.compile(r"/(\d+|[0-9a-f]{32})(?=/|$)")
_LEAD_PATH = re.compile(r"^/api/v4/leads/(\d+)$")


@dataclass(frozen=True)
class Scenario:
    name: str
    deals: int
    rate_per_s: float | None  # None: every deal is moved at once
    upstream_latency_s: float = 0.0
    # Deals whose customer Sage does not know yet (looked up, then created); the others are
    # repeat customers, already linked after their first invoice.
    new_customer_share: float = 0.2


@dataclass(frozen=True)
class E2EConfig:
    scenarios: tuple[Scenario, ...]

    @classmethod
    def full(cls) -> E2EConfig:
        return cls(
            (
                Scenario("burst", deals=120, rate_per_s=None),
                Scenario("steady", deals=75, rate_per_s=1.25),
                Scenario("burst+latency", deals=50, rate_per_s=None, upstream_latency_s=0.2),
            )
        )

    @classmethod
    def quick(cls) -> E2EConfig:
        return cls(
            (
                Scenario("burst", deals=8, rate_per_s=None),
                Scenario("steady", deals=6, rate_per_s=1.0),
                Scenario("burst+latency", deals=5, rate_per_s=None, upstream_latency_s=0.05),
            )
        )


@dataclass(frozen=True)
class Calls:
    """The requests one simulator received during a scenario (its request log)."""

    total: int
    rate_limited: int  # answered 429 (not counted against the limit by the upstream)
    by_route: dict[str, int]

    @property
    def accepted(self) -> int:
        return self.total - self.rate_limited


@dataclass
class ScenarioResult:
    scenario: Scenario
    invoiced: int
    duplicate_invoices: int
    elapsed_s: float  # first move → last invoice written back
    invoices_per_min: float
    kommo: Calls
    sage: Calls
    kommo_calls_per_invoice: float  # every request sent, 429s included
    sage_calls_per_invoice: float
    # The same by upstream under plain keys, for readers of the JSON: {"kommo": …, "sage": …}.
    calls_per_invoice: dict[str, float]
    responses_429: dict[str, int]  # answers 429 received, by upstream
    # What the two rate limits allow at the accepted calls per invoice measured here (a 429 is
    # not counted by the upstream, it only wastes time), and which limit binds.
    ceiling_per_min: float
    binding_limit: str
    share_of_ceiling: float
    latency: Latency  # trigger → invoice, per deal
    webhooks_not_delivered: int
    notes: list[str] = field(default_factory=list)


async def run_e2e(infra: Infra, workdir: Path, config: E2EConfig) -> list[ScenarioResult]:
    results = []
    for scenario in config.scenarios:
        result = await run_scenario(infra, workdir, scenario)
        _print_result(result)
        results.append(result)
    return results


async def run_scenario(infra: Infra, workdir: Path, scenario: Scenario) -> ScenarioResult:
    await infra.reset()
    kommo_state = demo_kommo_state()
    deal_ids = add_deals(
        kommo_state, scenario.deals, new_customer_share=scenario.new_customer_share
    )
    async with run_sandbox(kommo_state=kommo_state) as sandbox:
        api_port = free_port()
        env = bridge_env(
            database_url=infra.database_url,
            redis_url=infra.redis_url,
            api_port=api_port,
            upstreams=Upstreams(sandbox.kommo_url, sandbox.sage_api_url),
            data_dir=workdir / f"e2e-{scenario.name}-data",
        )
        hook = f"http://127.0.0.1:{api_port}/webhooks/kommo/{WEBHOOK_SECRET}"
        register_webhook(sandbox.kommo.state, hook)
        logs = workdir / f"e2e-{scenario.name}"
        api = await start_api(env, logs.with_suffix(".api.log"), api_port)
        worker = await start_worker(env, logs.with_suffix(".worker.log"))
        async with stopping(api, worker):
            _start_clean(sandbox, scenario.upstream_latency_s)
            moved = await _move_deals(sandbox, deal_ids, scenario.rate_per_s)
            await _wait_invoiced(sandbox, deal_ids, _deadline(scenario), (api, worker))
        await sandbox.kommo.webhooks.wait_idle()
        return _measure(sandbox, scenario, moved)


def _start_clean(sandbox: RunningSandbox, latency_s: float) -> None:
    """Forget the start-up calls (the mapping check) and arm the upstream latency, if any."""
    for upstream in (sandbox.kommo, sandbox.sage):
        upstream.requests.clear()
    if latency_s > 0:
        for path in KOMMO_ROUTES:
            sandbox.kommo.faults.add_latency("*", path, latency_s)
        for path in SAGE_ROUTES:
            sandbox.sage.faults.add_latency("*", path, latency_s)


async def _move_deals(
    sandbox: RunningSandbox, deal_ids: list[int], rate_per_s: float | None
) -> dict[int, float]:
    """Move each deal into Raise Invoice (all at once, or one every 1/rate s); when each moved."""
    moved: dict[int, float] = {}
    start = time.time()
    for index, deal_id in enumerate(deal_ids):
        if rate_per_s is not None and (delay := start + index / rate_per_s - time.time()) > 0:
            await asyncio.sleep(delay)
        moved[deal_id] = time.time()
        move_to_invoice_stage(sandbox.kommo, deal_id, site=sandbox.kommo_url)
    return moved


def _deadline(scenario: Scenario) -> float:
    """Twice the time the Kommo limit needs at 4 calls per invoice, plus one retry's wait."""
    schedule = scenario.deals / scenario.rate_per_s if scenario.rate_per_s else 0.0
    return time.time() + schedule + 2 * scenario.deals * 4 / 7 + DEADLINE_SLACK_S


async def _wait_invoiced(
    sandbox: RunningSandbox, deal_ids: list[int], deadline: float, processes: tuple[Process, ...]
) -> None:
    while time.time() < deadline and _invoiced_count(sandbox, deal_ids) < len(deal_ids):
        if any(p.exited() for p in processes):
            raise RuntimeError("a bridge process exited during the scenario; see its log")
        await asyncio.sleep(POLL_S)


def _invoiced_count(sandbox: RunningSandbox, deal_ids: list[int]) -> int:
    state = sandbox.kommo.state
    with state.lock:
        return sum(1 for i in deal_ids if state.leads[i].fields.get(FIELD_INVOICE_NUMBER))


def _measure(
    sandbox: RunningSandbox, scenario: Scenario, moved: dict[int, float]
) -> ScenarioResult:
    written = _written_back(sandbox.kommo.requests.entries(method="PATCH"), moved)
    kommo = _calls(sandbox.kommo.requests.entries())
    sage = _calls(sandbox.sage.requests.entries())
    per = max(1, len(written))  # "per invoice", safe when none was written back
    elapsed = max(written.values(), default=0.0) - min(moved.values(), default=0.0)
    ceiling, binding = _ceiling(sandbox, kommo.accepted / per, sage.accepted / per)
    rate = len(written) / elapsed * 60 if elapsed > 0 else 0.0
    return ScenarioResult(
        scenario=scenario,
        invoiced=len(written),
        duplicate_invoices=_duplicates(sandbox),
        elapsed_s=round(elapsed, 2),
        invoices_per_min=round(rate, 1),
        kommo=kommo,
        sage=sage,
        kommo_calls_per_invoice=round(kommo.total / per, 2),
        sage_calls_per_invoice=round(sage.total / per, 2),
        calls_per_invoice={
            "kommo": round(kommo.total / per, 2),
            "sage": round(sage.total / per, 2),
        },
        responses_429={"kommo": kommo.rate_limited, "sage": sage.rate_limited},
        ceiling_per_min=round(ceiling, 1),
        binding_limit=binding,
        share_of_ceiling=round(rate / ceiling, 3) if ceiling else 0.0,
        latency=Latency.of([written[i] - moved[i] for i in written]),
        webhooks_not_delivered=sum(
            1 for d in sandbox.kommo.webhooks.deliveries() if d.outcome != "delivered"
        ),
    )


def _written_back(patches: list[RecordedRequest], moved: dict[int, float]) -> dict[int, float]:
    """When Kommo answered the first successful PATCH of each moved deal (the write-back),
    alone (`PATCH /api/v4/leads/{id}`) or in a batch (`PATCH /api/v4/leads`)."""
    written: dict[int, float] = {}
    for entry in patches:
        if entry.status != 200:
            continue
        answered = entry.timestamp.timestamp() + entry.duration_ms / 1000
        for deal_id in _patched_ids(entry):
            if deal_id in moved and deal_id not in written:
                written[deal_id] = answered
    return written


def _patched_ids(entry: RecordedRequest) -> list[int]:
    match = _LEAD_PATH.match(entry.path)
    if match:
        return [int(match[1])]
    if entry.path == "/api/v4/leads" and isinstance(entry.body, list):
        return [item["id"] for item in entry.body if isinstance(item, dict) and "id" in item]
    return []


def _calls(entries: list[RecordedRequest]) -> Calls:
    routes = Counter(f"{e.method} {_ID_SEGMENT.sub('/{id}', e.path)}" for e in entries)
    limited = sum(1 for e in entries if e.status == 429)
    return Calls(total=len(entries), rate_limited=limited, by_route=dict(routes.most_common()))


def _ceiling(
    sandbox: RunningSandbox, kommo_per_invoice: float, sage_per_invoice: float
) -> tuple[float, str]:
    """Invoices per minute the binding rate limit allows at these calls per invoice."""
    limits = {
        "kommo": _per_minute(sandbox.kommo.config.rate_limit) / max(kommo_per_invoice, 1e-9),
        "sage": _per_minute(sandbox.sage.config.rate_limit) / max(sage_per_invoice, 1e-9),
    }
    binding = min(limits, key=lambda name: limits[name])
    return limits[binding], binding


def _per_minute(rule: RateLimit | None) -> float:
    return rule.limit * 60 / rule.window_seconds if rule and rule.enabled else float("inf")


def _duplicates(sandbox: RunningSandbox) -> int:
    """More than one Sage invoice for a deal would be a correctness bug, not a speed one."""
    book = sandbox.sage.state.book_for(SAGE_BUSINESS_ID)
    with sandbox.sage.state.lock:
        references = Counter(invoice.reference for invoice in book.invoices.values())
    return sum(count - 1 for count in references.values() if count > 1)


def _print_result(r: ScenarioResult) -> None:
    s = r.scenario
    print(
        f"  e2e {s.name:14} {r.invoiced}/{s.deals} invoiced in {r.elapsed_s:6.1f} s"
        f"  {r.invoices_per_min:6.1f}/min = {r.share_of_ceiling:.0%} of {r.ceiling_per_min:.1f}"
        f" ({r.binding_limit})  calls/invoice kommo {r.kommo_calls_per_invoice}"
        f" sage {r.sage_calls_per_invoice}  429s kommo {r.kommo.rate_limited}"
        f" sage {r.sage.rate_limited}"
        f"  latency p50 {r.latency.p50_ms:.0f} p99 {r.latency.p99_ms:.0f} ms",
        flush=True,
    )
