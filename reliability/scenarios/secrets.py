"""Scenario 8 — secrets: a full run with known secrets (Kommo and Sage tokens, the webhook
secret, the ops token, the callback signing secret, the database and Redis passwords) that
walks the error paths too: real Kommo webhooks, Sage 5xx and a commit-then-timeout, an
unmapped product (a task), ops calls with good and bad tokens, signed and forged callbacks,
and Redis restarted under the worker (crash tracebacks). Then every bridge log line, every
database row, every Redis key and value, and everything the upstreams received or recorded
is searched for each secret (raw, URL-encoded, and the callback key's base64 and raw bytes).
Pass: 0 occurrences."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import redis.asyncio as aioredis
from standardwebhooks.webhooks import Webhook

from reliability.common import Result, moved, settle
from reliability.driver import Sender
from reliability.stack import Stack
from sandbox.seed import STATUS_RAISE_INVOICE


def _forms(secret: str) -> set[bytes]:
    forms = {secret, quote(secret, safe=""), quote_plus(secret)}
    if secret.startswith("whsec_"):
        key = secret.removeprefix("whsec_")
        forms.add(key)
        raw = base64.b64decode(key)
        if len(raw) >= 8:
            return {f.encode() for f in forms} | {raw}
    return {f.encode() for f in forms}


async def run(stack: Stack, *, deals: int, first_id: int, extra: dict[str, str]) -> Result:
    result = Result("8-secrets", "No secret in any log, row, key or upstream record")
    started = time.monotonic()
    await _exercise(stack, deals, first_id, result)
    sources = await _collect(stack)
    secrets = {**stack.secrets.named(), **extra}
    hits: dict[str, dict[str, int]] = {}
    for name, secret in secrets.items():
        for source, blob in sources.items():
            n = sum(blob.count(form) for form in _forms(secret))
            if n:
                hits.setdefault(name, {})[source] = n
    result.counts.update(
        {
            "secrets_checked": sorted(secrets),
            "sources": {k: f"{len(v) / 1024:.0f} KiB" for k, v in sources.items()},
            "log_lines": sum(v.count(b"\n") for k, v in sources.items() if k.startswith("log:")),
            "occurrences": hits,
        }
    )
    result.check("0 occurrences of any secret", not hits)
    for name, where in hits.items():
        result.notes.append(f"{name} found in {where}")
    return result.finish(started)


async def _exercise(stack: Stack, deals: int, first_id: int, result: Result) -> None:
    sb, bridge = stack.sandbox, stack.bridge
    await sb.subscribe(bridge.webhook_url)
    await sb.add_leads(first_id, deals, customers=2)
    unmapped_id = first_id + deals
    await sb.add_leads(unmapped_id, 1, customers=1, unmapped=True)
    # Sage fails twice, then holds one committed answer past the bridge's timeout.
    await sb.arm_sage_fault(
        method="POST", path="/v3.1/sales_invoices", kind="fail", status=503, count=2
    )
    await sb.arm_sage_fault(
        method="POST", path="/v3.1/sales_invoices", kind="timeout_after_commit", delay=30, count=1
    )
    ids = list(range(first_id, first_id + deals))
    half = ids[: deals // 2]
    await sb.stage([*half, unmapped_id], STATUS_RAISE_INVOICE, webhook=True)  # Kommo sends it
    rest = [await moved(stack, [d], STATUS_RAISE_INVOICE, trigger=True) for d in ids[deals // 2 :]]
    sender = Sender(bridge.webhook_url)
    try:
        await sender.send_all(rest, concurrency=4)
        wrong = Sender(f"{bridge.api_url}/webhooks/kommo/wrong-secret-for-the-scan")
        await wrong.send(rest[0])
        await wrong.aclose()
    finally:
        await sender.aclose()
    # Redis goes away under the running worker: whatever it prints then is scanned too.
    await asyncio.to_thread(stack.redis.restart, 0.5)
    settled, _, states = await settle(stack, [*ids, unmapped_id], timeout=300, expect="any")
    await sb.clear_faults()
    result.counts["deals"] = deals + 1
    result.counts["event_states"] = dict(states)
    result.check("scenario ran to completion", settled)
    await _ops_and_callbacks(stack, first_id)


async def _ops_and_callbacks(stack: Stack, first_id: int) -> None:
    summary = await stack.sandbox.summary(first_id, 1)
    found: list[dict[str, Any]] = next(iter(summary["invoices"].values()), [])
    invoice = str(found[0]["id"]) if found else "0" * 32
    now = datetime.now(UTC)
    body = json.dumps(
        {
            "type": "sales_invoice.updated",
            "data": {
                "id": invoice,
                "status": {"id": "PAID"},
                "outstanding_amount": 0,
                "updated_at": now.isoformat(),
            },
        }
    )
    good = Webhook(stack.secrets.callback_secret).sign("msg_secrets_1", now, body)
    ops = {"Authorization": f"Bearer {stack.secrets.ops_token}"}
    async with httpx.AsyncClient(base_url=stack.bridge.api_url, timeout=10) as http:
        for path in (
            "/ops/status",
            "/ops/retries?state=failed",
            "/ops/events/1",
            "/readyz",
            "/metrics",
        ):
            await http.get(path, headers=ops)
        await http.get("/ops/status", headers={"Authorization": "Bearer wrong-ops-token-x"})
        await http.post("/ops/events/1/replay", headers=ops)
        signed = {"webhook-id": "msg_secrets_1", "webhook-timestamp": str(int(now.timestamp()))}
        await http.post(
            "/webhooks/sage", content=body, headers={**signed, "webhook-signature": good}
        )
        await http.post(
            "/webhooks/sage", content=body, headers={**signed, "webhook-signature": "v1,Zm9yZ2Vk"}
        )
    await asyncio.sleep(2)  # let the worker apply the callback


async def _collect(stack: Stack) -> dict[str, bytes]:
    sources: dict[str, bytes] = {}
    for path in stack.bridge.log_files():
        sources[f"log:{path.name}"] = path.read_bytes()
    sources["database rows"] = (await stack.db.dump_text()).encode()
    sources["redis keys and values"] = await _redis_dump(stack.redis.url(0))
    sources["upstreams (requests received, records written)"] = json.dumps(
        await stack.sandbox.dump()
    ).encode()
    return sources


async def _redis_dump(url: str) -> bytes:
    chunks: list[bytes] = []
    async with aioredis.Redis.from_url(url) as r:
        async for key in r.scan_iter(count=500):
            chunks.append(key)
            kind = (await r.type(key)).decode()
            value: Any
            if kind == "string":
                value = await r.get(key)
            elif kind == "hash":
                value = await r.hgetall(key)
            elif kind == "zset":
                value = await r.zrange(key, 0, -1)
            elif kind == "list":
                value = await r.lrange(key, 0, -1)
            elif kind == "set":
                value = await r.smembers(key)
            else:
                value = b""
            chunks.append(repr(value).encode() if not isinstance(value, bytes) else value)
    return b"\n".join(chunks)
