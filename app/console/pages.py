"""Rendering: the Jinja2 environment (autoescaped, strict), and the headers every console
response carries. The pages load nothing but the bridge's own stylesheet: no script runs."""

from __future__ import annotations

from typing import Any

from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined

from app.console.formatting import STATE_WORDS, duration, relative, when

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}

_env = Environment(
    loader=PackageLoader("app.console", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(duration=duration, when=when, relative=relative)
_env.globals.update(state_words=STATE_WORDS)


def page(template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = _env.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def message(status_code: int, title: str, text: str) -> HTMLResponse:
    """A page that says one thing: a refusal, or why the console is off."""
    return page("message.html", status_code=status_code, title=title, text=text)


def redirect(url: str) -> RedirectResponse:
    """After a form: 303, so the browser GETs the page it is sent to."""
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


def local(path: str | None, default: str = "/console") -> str:
    """A console path to send the browser back to; anything else (another site) is refused."""
    if path and path.startswith("/console") and not path.startswith("//") and "\\" not in path:
        return path
    return default


def secured(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response
