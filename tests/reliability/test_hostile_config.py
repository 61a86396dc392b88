"""Hostile configuration: what a careless operator or a process beside the bridge can do to it.

Beside the hostile-input tests: an empty ops token, a secret quoted in a start-up error, the
sandbox in production, a pickle planted in Redis, an embedded Redis anyone can reach or that
outlives `run`, API docs with a CDN script, world-readable data files. Commands run as real
processes, as an operator starts them.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import signal
import stat
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError

from app.cli import migrate_database
from app.embedded_redis import EmbeddedRedis
from app.main import create_app
from app.queue import QUEUE_NAME, Queue
from app.settings import Settings, describe_errors
from app.workers.main import build_worker
from tests.conftest import make_settings
from tests.processes import clean_env, command, free_port, listening, running, wait_for

REFUSED = "sagebridge: configuration refused: "
SECRET = "the-oauth-client-secret-8f3b1c9d2e"
CREDENTIALS = {
    "KOMMO_BASE_URL": "http://127.0.0.1:9",
    "KOMMO_ACCESS_TOKEN": "kommo-token-for-hostile-tests",
    "KOMMO_ACCOUNT_ID": "29000001",
    "KOMMO_WEBHOOK_SECRET": "hostile-config-webhook-secret",
    "KOMMO_TRIGGER_PIPELINE_ID": "500",
    "KOMMO_TRIGGER_STATUS_ID": "503",
    "KOMMO_INVOICE_NUMBER_FIELD_ID": "900",
    "KOMMO_INVOICE_LINK_FIELD_ID": "901",
    "SAGE_BASE_URL": "http://127.0.0.1:9/v3.1",
    "SAGE_ACCESS_TOKEN": "sage-token-for-hostile-tests",
    "SAGE_BUSINESS_ID": "b" * 32,
    "MAPPING_CHECK_ON_START": "false",
}


@pytest.mark.parametrize(
    "args",
    [
        ("migrate",),
        ("api",),
        ("worker",),
        ("run",),
        ("events", "list"),
        ("mappings", "check"),
        ("connections", "list"),
    ],
    ids=lambda a: " ".join(a),
)
@pytest.mark.parametrize("token", ["", "short-token"], ids=["empty", "short"])
async def test_an_empty_or_short_ops_token_stops_every_command(
    tmp_path: Path, args: tuple[str, ...], token: str
) -> None:
    env = clean_env(tmp_path, OPS_API_TOKEN=token, **CREDENTIALS)

    rc, output = await command(*args, env=env, timeout=20)

    assert rc == 2, output
    assert output.splitlines() == [
        f"{REFUSED}OPS_API_TOKEN: empty or shorter than 32 characters: use a long random value "
        "(python3 -c 'import secrets; print(secrets.token_urlsafe(32))'), or unset it to turn "
        "the /ops endpoints off"
    ]


def test_an_unset_ops_token_still_means_ops_endpoints_off() -> None:
    assert make_settings(ops_api_token=None).ops_api_token is None
    assert make_settings(ops_api_token="x" * 32).ops_api_token is not None


async def test_a_refused_configuration_never_prints_a_secret(tmp_path: Path) -> None:
    # Kommo only partly configured, next to a Sage OAuth client secret and a Kommo token.
    env = clean_env(
        tmp_path,
        SAGE_OAUTH_CLIENT_SECRET=SECRET,
        KOMMO_ACCESS_TOKEN="kommo-token-should-not-leak",
        API_PORT="not-a-port",
    )

    rc, output = await command("migrate", env=env)

    assert rc == 2
    assert output.startswith(REFUSED) and len(output.splitlines()) == 1
    assert "API_PORT: Input should be a valid integer" in output
    assert SECRET not in output and "kommo-token-should-not-leak" not in output


def test_a_validation_error_quotes_no_input() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(sage_oauth_client_secret=[SECRET], kommo_access_token=SECRET)

    assert "sage_oauth_client_secret" in str(caught.value)
    assert SECRET not in str(caught.value)
    assert SECRET not in describe_errors(caught.value)


@pytest.mark.parametrize("role", ["api", "worker"])
async def test_api_and_worker_never_fall_back_to_the_sandbox(
    tmp_path: Path, redis_url: str, role: str
) -> None:
    env = clean_env(
        tmp_path,
        REDIS_URL=redis_url,
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}",
        API_PORT=str(free_port()),
    )

    rc, output = await command(role, env=env, timeout=15)

    assert rc == 2, output
    assert output.startswith(f"{REFUSED}no Kommo/Sage credentials are configured")
    assert "use `sagebridge run` or --sandbox" in output


def test_sandbox_mode_is_never_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_MODE", "true")
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)

    settings = Settings()

    assert settings.sandbox_mode is False
    assert settings.for_upstreams(sandbox=False).sandbox_mode is False
    assert "sandbox_mode" not in Settings.model_fields


def test_the_sandbox_refuses_real_credentials_and_a_public_address() -> None:
    with pytest.raises(Exception, match="cannot run with Kommo/Sage credentials"):
        make_settings().with_sandbox_defaults()
    with pytest.raises(Exception, match=r"listens on 127\.0\.0\.1 only"):
        Settings(api_host="0.0.0.0").with_sandbox_defaults()  # noqa: S104
    sandboxed = Settings().with_sandbox_defaults()
    assert sandboxed.sandbox_mode and sandboxed.ops_api_token is not None
    assert len(sandboxed.ops_api_token.get_secret_value()) >= 32


class _Planted:
    """Unpickling this creates a file: what a planted job would run in the worker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


async def test_a_pickle_planted_in_redis_runs_nothing_and_the_worker_goes_on(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    settings = make_settings(database_url=database_url, redis_url=redis_url, data_dir=tmp_path)
    marker = tmp_path / "pwned"
    job = {"t": 1, "f": "process_event", "a": [1], "k": {}, "et": 0, "payload": _Planted(marker)}
    async with aioredis.Redis.from_url(redis_url) as r:
        await r.flushdb()
        await r.psetex("arq:job:planted", 60_000, pickle.dumps(job))
        await r.zadd(QUEUE_NAME, {"planted": time.time() * 1000})

        worker = build_worker(settings, burst=True, cron_jobs=[])
        try:
            await worker.async_run()
        finally:
            await worker.close()

        left = await r.zcard(QUEUE_NAME)
    assert not marker.exists(), "unpickling the planted job ran code in the worker"
    assert (worker.jobs_failed, worker.jobs_complete, left) == (1, 0, 0)


async def test_jobs_are_written_as_json(redis_url: str, queue: Any) -> None:
    assert await Queue(queue).enqueue_event(7, 0)

    async with aioredis.Redis.from_url(redis_url) as r:
        raw = await r.get("arq:job:event:7:0")

    job = json.loads(raw)
    assert (job["f"], job["a"], job["k"]) == ("process_event", [7], {})


def test_the_embedded_redis_is_a_private_socket_with_a_password(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    try:
        import redis

        assert redis.Redis.from_url(server.url).config_get("port") == {"port": "0"}
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(unix_socket_path=str(server.socket_path)).ping()
        assert stat.S_IMODE(server.socket_path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE((tmp_path / "redis").stat().st_mode) == 0o700
    finally:
        server.close()


def _redis_servers_in(directory: Path) -> list[int]:
    """redis-server processes working in `directory` (they daemonize: not our children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if comm == "redis-server" and Path(cwd) == directory.resolve():
            found.append(int(entry.name))
    return found


async def test_run_stops_its_embedded_redis_on_sigterm(tmp_path: Path) -> None:
    api_port, sage_port, kommo_port = free_port(), free_port(), free_port()
    env = clean_env(
        tmp_path,
        API_PORT=str(api_port),
        SANDBOX_SAGE_PORT=str(sage_port),
        SANDBOX_KOMMO_PORT=str(kommo_port),
        MAPPING_CHECK_ON_START="false",
    )
    async with running(env, tmp_path / "run.log") as proc:
        await wait_for(f"http://127.0.0.1:{api_port}/healthz", proc)
        servers = _redis_servers_in(tmp_path / "data" / "redis")
        async with httpx.AsyncClient() as http:
            docs = await http.get(f"http://127.0.0.1:{api_port}/docs")

        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), timeout=60)

    assert len(servers) == 1
    assert docs.status_code == 200  # the sandbox run serves its API docs
    assert rc == 0, (tmp_path / "run.log").read_text()[-3000:]
    assert _redis_servers_in(tmp_path / "data" / "redis") == []


async def test_run_with_credentials_ignores_sandbox_mode_in_the_environment(
    tmp_path: Path, redis_url: str
) -> None:
    api_port, sage_port, kommo_port = free_port(), free_port(), free_port()
    env = clean_env(
        tmp_path,
        SANDBOX_MODE="true",
        REDIS_URL=redis_url,
        API_PORT=str(api_port),
        SANDBOX_SAGE_PORT=str(sage_port),
        SANDBOX_KOMMO_PORT=str(kommo_port),
        LOG_JSON="true",
        **CREDENTIALS,
    )
    log = tmp_path / "run.log"
    async with running(env, log) as proc:
        await wait_for(f"http://127.0.0.1:{api_port}/healthz", proc)
        async with httpx.AsyncClient() as http:
            docs = await http.get(f"http://127.0.0.1:{api_port}/docs")
            sandbox_token = await http.get(
                f"http://127.0.0.1:{api_port}/ops/status",
                headers={"Authorization": "Bearer sandbox-ops-token-for-127.0.0.1-only"},
            )
        simulators = [listening(port) for port in (sage_port, kommo_port)]

    assert simulators == [False, False]
    assert docs.status_code == 404
    assert sandbox_token.status_code == 401
    assert all(f'"{e}"' not in log.read_text() for e in ("sandbox.mode", "sandbox.ready"))


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
async def test_api_docs_are_off_unless_enabled(path: str, settings: Settings, queue: Any) -> None:
    async def status(docs_enabled: bool | None) -> int:
        app = create_app(settings.model_copy(update={"docs_enabled": docs_enabled}))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge.test") as http:
            return (await http.get(path)).status_code

    assert [await status(None), await status(False), await status(True)] == [404, 404, 200]


def test_the_sqlite_file_and_the_data_dir_are_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir)

    migrate_database(settings)

    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for path in data_dir.glob("sagebridge.db*"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    assert (data_dir / "sagebridge.db").exists()
