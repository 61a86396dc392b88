"""Connections to the upstreams: OAuth 2.0 grants for Sage and Kommo (or a Kommo long-lived
token), stored encrypted, refreshed single-flight across every process.

- `store.py`: the `connections` table's repository; Fernet ciphertext at rest (`crypto.py`).
- `oauth.py`: each provider's authorize URL, code exchange and refresh.
- `tokens.py`: `TokenProvider` (a valid access token, refreshed under a Redis lock) and
  `OAuthBearer` (httpx auth: bearer header, one forced refresh and one retry on a 401).
- `flow.py`: the connect flow behind app/routes/connections.py.
- `keepalive.py`: refresh idle Sage grants before their refresh token expires.
- `runtime.py`: `Connections`, the per-process holder of all of the above.
- `metrics.py`: Prometheus gauges (needs re-authorisation, refresh expiry) and counters.
- `cli.py`: `sagebridge connections generate-key | rotate-keys | list`.
"""
