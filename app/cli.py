"""`sagebridge` command line: run (API + worker), api, worker, migrate."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
import typer
import uvicorn
from alembic import command
from alembic.config import Config

from app.embedded_redis import EmbeddedRedis
from app.logging import configure_logging
from app.main import create_app
from app.settings import Settings, get_settings
from app.workers.main import build_worker

cli = typer.Typer(help="sagebridge: Kommo deals → Sage sales invoices.", no_args_is_help=True)
log = structlog.get_logger(__name__)
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def _project_root() -> Path:
    """Where alembic.ini and migrations/ are: the checkout, or the working directory (image)."""
    return PACKAGE_ROOT if (PACKAGE_ROOT / "alembic.ini").exists() else Path.cwd()


def migrate_database(settings: Settings) -> None:
    """alembic upgrade head, against the configured (or embedded) database."""
    root = _project_root()
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "migrations"))
    config.attributes["database_url"] = settings.resolved_database_url
    command.upgrade(config, "head")


@cli.command()
def migrate() -> None:
    """Apply database migrations."""
    settings = _settings()
    migrate_database(settings)
    log.info("db.migrated", database=_safe_url(settings.resolved_database_url))


@cli.command()
def run() -> None:
    """Run everything: migrations, then API and worker in one process (the Quick start)."""
    settings = _settings()
    migrate_database(settings)
    embedded = None
    if not settings.redis_url:
        embedded = EmbeddedRedis(settings.data_dir / "redis")
        settings = settings.model_copy(update={"redis_url": embedded.url})
    try:
        asyncio.run(_serve_all(settings))
    except KeyboardInterrupt:
        pass
    finally:
        if embedded is not None:
            embedded.close()


@cli.command()
def api() -> None:
    """Run only the HTTP API (needs REDIS_URL)."""
    settings = _settings()
    uvicorn.run(
        create_app(settings), host=settings.api_host, port=settings.api_port, log_config=None
    )


@cli.command()
def worker() -> None:
    """Run only the worker (needs REDIS_URL)."""
    settings = _settings()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run_worker(settings))


async def _run_worker(settings: Settings) -> None:
    # arq's Worker binds the running loop when built, so build it inside asyncio.run.
    worker = build_worker(settings)
    _stop_on_sigterm()
    try:
        await worker.async_run()
    except asyncio.CancelledError:
        log.info("worker.stopping")
    finally:
        await worker.close()


def _stop_on_sigterm() -> None:
    """SIGTERM cancels the main task so jobs stop and connections close; the inbox and the
    event leases make a hard kill safe too, this only makes a normal stop tidy."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)


async def _serve_all(settings: Settings) -> None:
    async with _sandbox(settings):
        config = uvicorn.Config(
            create_app(settings), host=settings.api_host, port=settings.api_port, log_config=None
        )
        server = uvicorn.Server(config)
        worker = build_worker(settings)
        log.info(
            "bridge.running",
            api=f"http://{settings.api_host}:{settings.api_port}",
            webhook=f"http://{settings.api_host}:{settings.api_port}/webhooks/kommo/<secret>",
            database=_safe_url(settings.resolved_database_url),
        )
        worker_task = asyncio.create_task(worker.async_run())
        try:
            await server.serve()
        finally:
            worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker_task
            await worker.close()


@contextlib.asynccontextmanager
async def _sandbox(settings: Settings) -> AsyncIterator[None]:
    if not settings.sandbox_mode:
        yield
        return
    from app.demo import serve_demo_sandbox

    async with serve_demo_sandbox(settings):
        yield


def _settings() -> Settings:
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    if settings.sandbox_mode:
        log.warning(
            "sandbox.mode",
            detail="no Kommo/Sage credentials configured: using the built-in sandbox upstreams",
            kommo=settings.kommo_base_url,
            sage=settings.sage_base_url,
        )
    return settings


def _safe_url(url: str) -> str:
    """A database URL without its password, for logs."""
    scheme, _, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}://{rest}"


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
