"""GET /: where a person who opens the bridge's address in a browser should go next."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.routes.deps import SettingsDep

router = APIRouter(include_in_schema=False)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sagebridge</title></head>
<body>
<h1>sagebridge</h1>
<p>Kommo deals moved to the invoice stage become Sage Accounting sales invoices.</p>
<ul>
<li><a href="/healthz">/healthz</a>: the process is up</li>
<li><a href="/readyz">/readyz</a>: ready to take and process work, or what is not</li>
<li><a href="/metrics">/metrics</a>: Prometheus metrics</li>
{docs}</ul>
<p>The ops console and the <code>/ops</code> endpoints are off: set <code>OPS_API_TOKEN</code>
(at least 32 characters) and restart to use them.</p>
<p>Setting up, configuration and operations: <code>README.md</code> and <code>docs/</code> in
the sagebridge checkout.</p>
</body></html>
"""
_API_DOCS = '<li><a href="/docs">/docs</a>: the HTTP API, interactive</li>\n'


@router.get("/", response_model=None)
async def home(settings: SettingsDep) -> Response:
    """The console when ops can log in to it; otherwise a page of the endpoints that work."""
    if settings.ops_api_token is not None:
        return RedirectResponse("/console", status_code=303)
    return HTMLResponse(_PAGE.format(docs=_API_DOCS if settings.serve_docs else ""))
