"""`sagebridge` command line: run (API + worker), api, worker, migrate, mappings, events."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import structlog
import typer
import uvicorn
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from app import running
from app.connections.cli import connections_cli
from app.embedded_redis import EmbeddedRedis
from app.errors import AppError
from app.inbox import ops as operations
from app.inbox.models import NEEDS_ATTENTION, EventState
from app.inbox.repository import InboxRepository
from app.logging import configure_logging
from app.main import create_app
from app.mapping import MappingError, load_mapping, read_mapping_text
from app.mapping_assist import Suggestion, suggest, yaml_skeleton
from app.mapping_store import CurrentMapping, How, Mappings, validated
from app.queue import Queue
from app.reconciliation_cli import reconcile_cli
from app.runtime import Database, Upstreams
from app.settings import ConfigError, Settings, get_settings
from app.workers.main import build_worker

if TYPE_CHECKING:
    from app.demo import SandboxStates

cli = typer.Typer(help="sagebridge: Kommo deals → Sage sales invoices.", no_args_is_help=True)
cli.add_typer(connections_cli, name="connections")
cli.add_typer(reconcile_cli, name="reconcile")
log = structlog.get_logger(__name__)
T = TypeVar("T")
WORKER_RESTART_SECONDS = 2.0
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
CONFIG_ERROR_EXIT = 2
SandboxOption = Annotated[
    bool,
    typer.Option(
        "--sandbox",
        help="Use the built-in sandbox upstreams (python -m sandbox); refused when Kommo or "
        "Sage credentials are configured.",
    ),
]


def _project_root() -> Path:
    """Where alembic.ini and migrations/ are: the checkout, or the working directory (image)."""
    return PACKAGE_ROOT if (PACKAGE_ROOT / "alembic.ini").exists() else Path.cwd()


def migrate_database(settings: Settings, revision: str = "head") -> None:
    """alembic upgrade (to head unless told), against the configured (or embedded) database."""
    # Imported here: alembic is 6 MiB that `sagebridge api` and `worker` never use.
    from alembic import command
    from alembic.config import Config

    root = _project_root()
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "migrations"))
    config.attributes["database_url"] = settings.resolved_database_url
    command.upgrade(config, revision)


@cli.command()
def migrate() -> None:
    """Apply database migrations."""
    settings = _settings()
    migrate_database(settings)
    log.info("db.migrated", database=_safe_url(settings.resolved_database_url))


@cli.command()
def run() -> None:
    """Run everything: migrations, then API and worker in one process (the Quick start); the
    sandbox upstreams too when no Kommo/Sage credentials are configured."""
    settings = _settings()
    if not settings.has_upstream_credentials:
        settings = _sandboxed(settings.with_sandbox_defaults())
    _refuse_a_second_run(settings.data_dir)
    _refuse_busy_ports(_listens_on(settings))
    # uvicorn re-raises the SIGTERM it caught once it has shut down, which would end the process
    # before the `finally` below stops the embedded Redis: make SIGTERM a KeyboardInterrupt.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    embedded = None
    try:
        migrate_database(settings)
        states = _sandbox_states(settings)
        if not settings.redis_url:
            embedded = EmbeddedRedis(settings.data_dir / "redis")
            settings = settings.model_copy(update={"redis_url": embedded.url})
        running.announce(settings.data_dir, embedded.url if embedded else None)
        asyncio.run(_serve_all(settings, states))
    except KeyboardInterrupt:
        pass
    finally:
        running.withdraw(settings.data_dir)
        if embedded is not None:
            embedded.close()


def _sandbox_states(settings: Settings) -> SandboxStates | None:
    """The simulators' records to start from (None outside the sandbox), before anything
    starts: the bridge's data without them is refused."""
    if not settings.sandbox_mode:
        return None
    from app.demo import SandboxOutOfStep, load_states  # only `run` in the sandbox needs it

    try:
        return asyncio.run(load_states(settings))
    except SandboxOutOfStep as exc:
        _refuse(str(exc))


def _refuse(message: str) -> NoReturn:
    """One line naming what to change, no traceback: the machine or the data, not a bug."""
    sys.stderr.write(f"sagebridge: {message}\n")
    raise typer.Exit(CONFIG_ERROR_EXIT)


def _refuse_a_second_run(data_dir: Path) -> None:
    if (other := running.find(data_dir)) is not None:
        _refuse(
            f"`sagebridge run` (pid {other.pid}) already uses DATA_DIR {data_dir}: stop it first "
            "(Ctrl-C in its terminal), or give this one another DATA_DIR and other ports"
        )


def _listens_on(settings: Settings) -> list[tuple[str, str, int]]:
    """(variable, host, port) of each socket the command will listen on."""
    ports = [("API_PORT", settings.api_host, settings.api_port)]
    if settings.sandbox_mode:
        ports.append(("SANDBOX_SAGE_PORT", "127.0.0.1", settings.sandbox_sage_port))
        ports.append(("SANDBOX_KOMMO_PORT", "127.0.0.1", settings.sandbox_kommo_port))
    return ports


def _refuse_busy_ports(ports: list[tuple[str, str, int]]) -> None:
    """Before anything starts: a port in use ends the command naming the variable to change."""
    problems = []
    for i, (name, host, port) in enumerate(ports):
        same = [other for other, _, p in ports[:i] if p == port]
        if same:
            problems.append(f"{name} and {same[0]} are both {port}: give each its own port")
        elif not _free(host, port):
            problems.append(
                f"port {port} on {host} ({name}) is in use: stop what listens there, "
                f"or set {name} to a free port"
            )
    if problems:
        _refuse("; ".join(problems))


def _free(host: str, port: int) -> bool:
    # SO_REUSEADDR as uvicorn binds: a port left in TIME_WAIT by a stopped run is free.
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@cli.command()
def api(sandbox: SandboxOption = False) -> None:
    """Run only the HTTP API (needs REDIS_URL); API_WORKERS processes share its port."""
    settings = _upstream_settings(sandbox=sandbox)
    _refuse_busy_ports(_listens_on(settings)[:1])
    if settings.api_workers == 1 or settings.sandbox_mode:
        uvicorn.run(
            create_app(settings), host=settings.api_host, port=settings.api_port, log_config=None
        )
        return
    # Each process builds its own app (and pools) from the same environment.
    uvicorn.run(
        "app.main:app_factory",
        factory=True,
        workers=settings.api_workers,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
    )


@cli.command()
def worker(sandbox: SandboxOption = False) -> None:
    """Run only the worker (needs REDIS_URL)."""
    settings = _upstream_settings(sandbox=sandbox)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run_worker(settings))


async def _run_worker(settings: Settings) -> None:
    _stop_on_sigterm()
    try:
        await supervised_worker(settings)
    except asyncio.CancelledError:
        log.info("worker.stopping")


async def supervised_worker(settings: Settings, *, pause: float = WORKER_RESTART_SECONDS) -> None:
    """Run the arq worker, and run it again when Redis goes away under it.

    arq lets redis-py's connection errors out of its poll loop (and out of start-up while Redis
    is down); the inbox keeps every event, so restarting is all it takes to go on.
    """
    while True:
        # arq's Worker binds the running loop when built, so build it inside the loop.
        worker = build_worker(settings)
        try:
            await worker.async_run()
            return
        except (RedisError, OSError) as exc:
            log.error("worker.redis_lost", error=type(exc).__name__, restart_in_s=pause)
        finally:
            await _close_quietly(worker)
        await asyncio.sleep(pause)


async def _close_quietly(worker: Any) -> None:
    """arq's close() cancels running jobs and re-raises their CancelledError; that is not a
    request to stop unless this task itself is being cancelled."""
    try:
        await worker.close()
    except (RedisError, OSError):
        pass
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


def _stop_on_sigterm() -> None:
    """SIGTERM cancels the main task so jobs stop and connections close; the inbox and the
    event leases make a hard kill safe too, this only makes a normal stop tidy."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)


async def _serve_all(settings: Settings, states: SandboxStates | None) -> None:
    async with _sandbox(settings, states):
        config = uvicorn.Config(
            create_app(settings), host=settings.api_host, port=settings.api_port, log_config=None
        )
        server = uvicorn.Server(config)
        log.info(
            "bridge.running",
            api=f"http://{settings.api_host}:{settings.api_port}",
            webhook=f"http://{settings.api_host}:{settings.api_port}/webhooks/kommo/<secret>",
            database=_safe_url(settings.resolved_database_url),
        )
        worker_task = asyncio.create_task(supervised_worker(settings))
        try:
            await server.serve()
        finally:
            worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker_task


@contextlib.asynccontextmanager
async def _sandbox(settings: Settings, states: SandboxStates | None) -> AsyncIterator[None]:
    if states is None:
        yield
        return
    from app.demo import serve_demo_sandbox

    async with serve_demo_sandbox(settings, states):
        yield


@cli.command()
def reset(
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    outside_sandbox: Annotated[
        bool,
        typer.Option(
            "--outside-sandbox",
            help="Reset although Kommo/Sage credentials are configured: the record of which "
            "real deals were invoiced is lost, and moving one again invoices it again.",
        ),
    ] = False,
) -> None:
    """Start afresh: delete the bridge's data and, in the sandbox, the sandbox Kommo's and
    Sage's saved records, so the next `run` starts both from the seed."""
    settings = _settings()
    in_sandbox = not settings.has_upstream_credentials
    if not in_sandbox and not outside_sandbox:
        _refuse(
            "Kommo/Sage credentials are configured, so this database records which real deals "
            "were invoiced: reset it only with --outside-sandbox, if you mean it"
        )
    if (other := running.find(settings.data_dir)) is not None:
        _refuse(f"stop `sagebridge run` (pid {other.pid}) first: it is using this data")
    from app import reset as resets  # only `reset` needs it

    database = _safe_url(settings.resolved_database_url)
    plan = asyncio.run(resets.plan(settings, database=database, sandbox=in_sandbox))
    typer.echo("This deletes:\n" + "\n".join(f"  - {line}" for line in plan.lines))
    if not yes and not typer.confirm("Delete all of it?", default=False):
        typer.echo("Nothing was deleted.")
        raise typer.Exit(1)
    asyncio.run(resets.carry_out(settings, plan))
    fresh = "the bridge and the sandbox from the seed" if in_sandbox else "with an empty database"
    typer.echo(f"✓ deleted: the next `sagebridge run` starts {fresh}")


mappings_cli = typer.Typer(
    help="Check or load the ledger mapping, or draft rules for unmapped products."
)
events_cli = typer.Typer(help="List, replay and discard inbox events.")
cli.add_typer(mappings_cli, name="mappings")
cli.add_typer(events_cli, name="events")


@mappings_cli.command("check")
def mappings_check(sandbox: SandboxOption = False) -> None:
    """Validate config/ledger_mappings.yaml, and its ids against Sage; exit 1 on any problem.
    Nothing is stored: `mappings load` puts the file in force."""
    settings = _upstream_settings(sandbox=sandbox)
    problems = asyncio.run(_check_mapping(settings))
    if problems:
        _echo_problems(settings.ledger_mappings_path, problems)
        raise typer.Exit(1)
    typer.echo(f"✓ {settings.ledger_mappings_path} is valid and every id exists in Sage")


def _echo_problems(path: Path, problems: list[str]) -> None:
    typer.echo(f"{path}: {len(problems)} problem(s)", err=True)
    for problem in problems:
        typer.echo(f"✗ {problem}", err=True)


async def _check_mapping(settings: Settings) -> list[str]:
    upstreams = Upstreams.open(settings)
    path = settings.ledger_mappings_path
    try:
        text = read_mapping_text(path)
        await validated(text, str(path), upstreams.accounting, unverifiable_ok=False)
    except MappingError as exc:
        return exc.problems
    finally:
        await upstreams.close()
    return []


@mappings_cli.command("load")
def mappings_load(sandbox: SandboxOption = False) -> None:
    """Validate the file and its ids against Sage, and put it in force for every process
    (a new version in the database when it differs); exit 1 naming each problem."""
    settings = _upstream_settings(sandbox=sandbox)
    try:
        current, stored = asyncio.run(_load_mapping(settings))
    except MappingError as exc:
        _echo_problems(settings.ledger_mappings_path, exc.problems)
        typer.echo("✗ refused: the mapping in force is unchanged", err=True)
        raise typer.Exit(1) from exc
    verb = "is now in force" if stored else "was already in force"
    typer.echo(
        f"✓ {settings.ledger_mappings_path} {verb} as version {current.id} "
        f"({len(current.mapping.file.rules)} rules, sha256 {current.sha256[:12]})"
    )


async def _load_mapping(settings: Settings) -> tuple[CurrentMapping, bool]:
    db = Database.open(settings)
    upstreams = Upstreams.open(settings)
    try:
        mappings = Mappings.create(settings.ledger_mappings_path, db.sessionmaker, "cli")
        before = await mappings.newest_id()
        current = await mappings.load(How.CLI, upstreams.accounting)
    finally:
        await upstreams.close()
        await db.close()
    return current, current.id != before


@mappings_cli.command("suggest")
def mappings_suggest(
    as_yaml: Annotated[
        bool, typer.Option("--yaml", help="Print a YAML skeleton of rules.")
    ] = False,
    sandbox: SandboxOption = False,
) -> None:
    """Sage sales ledger accounts and tax rates next to the Kommo products with no rule yet."""
    settings = _upstream_settings(sandbox=sandbox)
    suggestion = asyncio.run(_suggest(settings))
    if as_yaml:
        typer.echo(yaml_skeleton(suggestion))
        return
    typer.echo("Sales ledger accounts in Sage:")
    for account in suggestion.ledger_accounts:
        typer.echo(f"  {account.id}  {account.code or '-':>6}  {account.name}")
    typer.echo("Tax rates in Sage:")
    for rate_id, name in suggestion.tax_rates.items():
        typer.echo(f"  {rate_id:<16} {name}")
    typer.echo(f"Kommo products with no rule ({len(suggestion.unmapped)}):")
    for p in suggestion.unmapped:
        typer.echo(f"  element {p.element_id}  sku={p.sku}  type={p.product_type}  {p.name}")


async def _suggest(settings: Settings) -> Suggestion:
    mapping = load_mapping(settings.ledger_mappings_path)
    upstreams = Upstreams.open(settings)
    from rich.progress import Progress, SpinnerColumn, TextColumn

    try:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), transient=True) as bar:
            task = bar.add_task("Reading Kommo catalogs, then Sage's ledger accounts…", total=None)
            return await suggest(
                upstreams,
                mapping,
                on_page=lambda n: bar.update(task, advance=n, description=f"{n} products read…"),
            )
    finally:
        await upstreams.close()


@events_cli.command("list")
def events_list(
    state: Annotated[
        list[EventState] | None, typer.Option(help="Repeat for several states.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
) -> None:
    """Events, newest first (default: those waiting or needing attention, as /ops/retries)."""
    settings = _settings()
    states = [s.value for s in state or NEEDS_ATTENTION]
    rows, total = asyncio.run(
        _in_session(
            settings, lambda s: InboxRepository(s).list(states=states, limit=limit, offset=0)
        )
    )
    typer.echo(f"{total} event(s) in {', '.join(states)}")
    for e in rows:
        typer.echo(
            f"  #{e.id:<6} deal {e.deal_id:<10} {e.state:<13} attempt {e.attempts}  "
            f"{(e.last_error or '')[:90]}"
        )


@events_cli.command("replay")
def events_replay(event_id: int) -> None:
    """Run an event again from the start (no second invoice for an invoiced deal)."""
    settings = _settings()
    typer.echo(asyncio.run(_replay(settings, event_id)))


@events_cli.command("discard")
def events_discard(
    event_id: int, reason: Annotated[str, typer.Option(help="Why (recorded).")]
) -> None:
    """End an event by hand, with a reason."""
    settings = _settings()
    event = asyncio.run(_in_session(settings, lambda s: operations.discard(s, event_id, reason)))
    typer.echo(f"event {event.id} discarded: {reason}")


async def _in_session(settings: Settings, action: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """`action` in a session; an error it raises for the user ends the command (exit 1)."""
    db = Database.open(settings)
    try:
        async with db.sessionmaker() as session:
            return await action(session)
    except AppError as exc:
        typer.echo(f"✗ {exc.detail}", err=True)
        raise typer.Exit(1) from exc
    finally:
        await db.close()


@dataclass(frozen=True)
class _Redis:
    """The Redis this command can queue on, and how it was found (for what it prints)."""

    url: str | None
    found: str


def _redis_of(settings: Settings) -> _Redis:
    if settings.redis_url:
        return _Redis(settings.redis_url, "REDIS_URL")
    other = running.find(settings.data_dir)
    if other is not None and other.redis_url:
        return _Redis(other.redis_url, f"the embedded Redis of `sagebridge run` (pid {other.pid})")
    return _Redis(
        None, f"REDIS_URL is not set and no `sagebridge run` uses DATA_DIR {settings.data_dir}"
    )


class _Unqueued(Queue):
    """No Redis known to this command: a replayed event waits in the database, where a
    worker's sweeper finds it."""

    def __init__(self) -> None:
        pass

    async def enqueue_event(
        self, event_id: int, attempt: int = 0, at: datetime | None = None
    ) -> bool:
        return False

    async def close(self) -> None:
        pass


async def _replay(settings: Settings, event_id: int) -> str:
    redis = _redis_of(settings)
    queue = await Queue.open(redis.url) if redis.url else _Unqueued()
    try:
        event = await _in_session(settings, lambda s: operations.replay(s, queue, event_id))
        delivery = await _delivery(queue, redis, settings.sweeper_interval_seconds)
    finally:
        await queue.close()
    return f"event {event.id} is pending again (deal {event.deal_id}): {delivery}"


async def _delivery(queue: Queue, redis: _Redis, sweep_s: int) -> str:
    """What happens next, as far as this command can tell."""
    later = f"a worker's sweeper starts it within {sweep_s} s once a worker runs"
    if redis.url is None:
        return f"not queued ({redis.found}); {later}"
    try:
        alive = await queue.worker_alive()
    except (RedisError, OSError):
        return f"not queued ({redis.found} is unreachable); {later}"
    if not alive:
        return f"queued on {redis.found}, but no worker is running: it runs when one starts"
    return f"queued on {redis.found} for the running worker"


def _settings() -> Settings:
    """The environment's settings, with logging configured; ConfigError ends the command."""
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    return settings


def _upstream_settings(*, sandbox: bool) -> Settings:
    """Settings for a command that talks to Kommo and Sage: never the sandbox unless asked."""
    settings = _settings().for_upstreams(sandbox=sandbox)
    return _sandboxed(settings) if settings.sandbox_mode else settings


def _sandboxed(settings: Settings) -> Settings:
    log.warning(
        "sandbox.mode",
        detail="using the built-in sandbox upstreams and their published tokens",
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
    try:
        cli()
    except ConfigError as exc:
        # One line, no traceback: it is the operator's configuration, not a bug.
        sys.stderr.write(f"sagebridge: configuration refused: {exc}\n")
        sys.exit(CONFIG_ERROR_EXIT)


if __name__ == "__main__":
    main()
