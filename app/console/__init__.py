"""The ops console (`/console`): server-rendered pages over the same functions as `/ops`.

    routes      the pages and their buttons (plain HTML forms; no script runs in the pages)
    auth        off without OPS_API_TOKEN; a session for every page; a CSRF token on every POST
    sessions    the ops token exchanged once for a signed session cookie, kept in Redis
    dashboard   events per state, invoices per hour and latency, upstream errors, connections
    timeline    one deal's sync log in order, per event
    charts      small SVG charts drawn on the server
    repository  the two queries of the dashboard's charts that no /ops endpoint makes
    pages       the Jinja2 environment and the headers every console response carries
    formatting  how times, durations and states are written

`templates/` holds the pages, `static/` the one stylesheet; nothing is loaded from elsewhere.
"""
