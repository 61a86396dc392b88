"""Prometheus metrics (prometheus-client). Counters live in each process; the gauges ops care
most about (events by state, queue depth, oldest pending event, webhook disabled) are read from
the database and Redis when /metrics is scraped, so any API process reports the whole system."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from prometheus_client import Counter, Gauge, Histogram

WEBHOOKS = Counter(
    "sagebridge_webhooks_total", "Webhooks received, by source and result", ["source", "result"]
)
EVENTS_FINISHED = Counter(
    "sagebridge_events_finished_total", "Events that reached a terminal state", ["state"]
)
INVOICES_CREATED = Counter("sagebridge_invoices_created_total", "Invoices created upstream")
INVOICE_TOTALS_DIFFER = Counter(
    "sagebridge_invoice_totals_differ_total",
    "Invoices whose net, tax or total in Sage differ from the bridge's (the penny check)",
)
RETRIES = Counter("sagebridge_retries_total", "Retries scheduled after a transient failure")
TASKS_OPENED = Counter("sagebridge_tasks_opened_total", "CRM tasks opened for managers")
UPSTREAM_REQUESTS = Counter(
    "sagebridge_upstream_requests_total",
    "Requests to upstream APIs",
    ["api", "method", "route", "status"],
)
UPSTREAM_LATENCY = Histogram(
    "sagebridge_upstream_request_seconds", "Upstream request latency", ["api", "route"]
)
EVENTS_BY_STATE = Gauge("sagebridge_events", "Inbox events by state", ["state"])
QUEUE_DEPTH = Gauge("sagebridge_queue_depth", "Jobs waiting in the arq queue")
OLDEST_PENDING = Gauge(
    "sagebridge_oldest_pending_event_seconds", "Age of the oldest pending or retrying event"
)
RECONCILIATION_ROWS = Gauge(
    "sagebridge_reconciliation_rows",
    "Findings of the latest reconciliation report, by kind",
    ["kind"],
)
KOMMO_WEBHOOK_DISABLED = Gauge(
    "sagebridge_kommo_webhook_disabled", "1 when Kommo has disabled the bridge's webhook"
)

_ID = re.compile(r"/(?:\d+|[0-9a-f]{32})(?=/|$)")


def route_of(path: str) -> str:
    """`/api/v4/leads/123` → `/api/v4/leads/:id`: bounded label values. A full URL loses its
    host (a Kommo token URL is on the account's own domain: no account in a label)."""
    return _ID.sub("/:id", urlsplit(path).path if "://" in path else path.split("?", 1)[0])
