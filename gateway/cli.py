"""``dify-gateway``: serve the inner API, or check a configuration file."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import orjson

from gateway import __version__
from gateway.config import CONFIG_ENV, CONSOLE_ENV, INNER_API_KEY_ENV, ConfigError, GatewayConfig, load_config
from gateway.config.backends import resolve_backend
from gateway.cpus import AUTO_WORKERS_CAP, auto_workers
from gateway.logs import configure_logging
from gateway.routing import RouteTable
from gateway.usage.database import resolve_database_url
from gateway.usage.migrate import run_migrate
from gateway.usage.report_cli import add_usage_arguments, run_usage

if TYPE_CHECKING:
    import asyncio


def _load(path: str | None) -> GatewayConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"dify-gateway: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


HOST_ENV = "DIFY_GATEWAY_HOST"
PORT_ENV = "DIFY_GATEWAY_PORT"
WORKERS_ENV = "DIFY_GATEWAY_WORKERS"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PARENT_PID_ENV = "DIFY_GATEWAY_PARENT_PID"  # for workers: the parent they must not outlive


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        print(f"dify-gateway: {name} must be a whole number, not {raw!r}", file=sys.stderr)
        raise SystemExit(2) from None
    if value < 1:
        print(f"dify-gateway: {name} must be at least 1, not {value}", file=sys.stderr)
        raise SystemExit(2)
    return value


def _workers_from_env() -> int | None:
    """``DIFY_GATEWAY_WORKERS``: a number, or ``auto`` (the default: one per available CPU)."""
    if os.environ.get(WORKERS_ENV, "").strip().lower() == "auto":
        return None
    return _env_int(WORKERS_ENV)


def _workers_arg(raw: str) -> int:
    """``--workers``: a number of at least 1, or ``auto`` (0 here: decided by the environment or CPUs)."""
    if raw.strip().lower() == "auto":
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number or 'auto', not {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"at least 1, not {value}")
    return value


def app_factory() -> object:
    """Entry point for uvicorn workers: the config path comes from the environment."""
    _exit_with_parent()
    _defer_sighup_until_served()

    config = _load(os.environ.get(CONFIG_ENV))
    configure_logging(config.server.log_level, config.server.log_format, config.server.access_log)  # a fresh process
    return _create(config)


def _exit_with_parent() -> None:
    """A worker gets SIGTERM (and drains) when the parent process dies, even by SIGKILL:
    otherwise workers of a killed parent would go on serving, orphaned, forever."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.environ.get(PARENT_PID_ENV) != str(os.getppid()):  # the parent died before the line above
        os.kill(os.getpid(), signal.SIGTERM)


def _ignore_sighup_until_served() -> None:
    """SIGHUP reloads the configuration once the app has started (``gateway.app``); before
    that it must not end the process, which is its default action. The parent of several
    workers ignores it until its supervisor runs (the workers inherit that across exec)."""
    import signal

    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def _defer_sighup_until_served() -> None:
    """In a process that becomes the app: a SIGHUP before it serves is applied once it does
    (it may mean the file changed after this process read it)."""
    import signal

    from gateway.reload import remember_early_sighup

    signal.signal(signal.SIGHUP, remember_early_sighup)


def _preflight(config: GatewayConfig) -> None:
    """Checks that would otherwise fail in every worker, made once before they start."""
    from gateway.errors import GatewayError

    if config.tracing.enabled:
        from gateway.tracing import require_otel

        try:
            require_otel()
        except GatewayError as exc:
            print(f"dify-gateway: {exc.message}", file=sys.stderr)
            raise SystemExit(2) from None


def _create(config: GatewayConfig) -> object:
    from gateway.app import create_app
    from gateway.errors import GatewayError

    try:
        return create_app(config)
    except GatewayError as exc:
        print(f"dify-gateway: {exc.message}", file=sys.stderr)
        raise SystemExit(2) from None


def _prepare_multiprocess_metrics(workers: int) -> None:
    """Several workers share their metrics through prometheus-client's multiprocess files.

    Must run before prometheus-client is imported (it picks its value store at import).
    The directory is ``$PROMETHEUS_MULTIPROC_DIR`` or a fresh temporary one; files a
    previous run left there are removed, or their counts would be added to this run's.
    """
    if workers <= 1:
        return
    directory = os.environ.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix="dify-gateway-metrics-")
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))
    os.environ[MULTIPROC_ENV] = directory


def _serve(args: argparse.Namespace) -> int:
    if args.console:
        os.environ[CONSOLE_ENV] = "1"  # in the environment, so that worker processes see it too
    config = _load(args.config)
    if config.dify.inner_api_key is None:
        print(
            f"dify-gateway: no inner API key: set {INNER_API_KEY_ENV} (the same value as the plugin "
            "daemon's DIFY_INNER_API_KEY) or dify.inner_api_key in the configuration file",
            file=sys.stderr,
        )
        return 2
    host = args.host or os.environ.get(HOST_ENV) or config.server.host
    port = args.port or _env_int(PORT_ENV) or config.server.port
    workers = args.workers or _workers_from_env() or auto_workers()
    _preflight(config)
    _prepare_multiprocess_metrics(workers)
    import uvicorn

    configure_logging(config.server.log_level, config.server.log_format, config.server.access_log)
    logging.getLogger("dify_gateway").info(
        "dify-gateway %s serving on %s:%d with %d route(s) from %s, %d worker(s)",
        __version__,
        host,
        port,
        len(config.routes),
        config.source,
        workers,
    )
    if config.console.enabled:
        _log_console(config, host, port)
    options = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": protocol_factory(config),
        "timeout_keep_alive": config.server.keep_alive_timeout_s,
        "access_log": config.server.access_log,
        "log_level": config.server.log_level,
        "lifespan": "on",
        "log_config": None,  # logging is configured above (JSON or text), not by uvicorn
        # Requests in flight when the server stops get this long (see server.drain_timeout_s).
        "timeout_graceful_shutdown": config.server.drain_timeout_s,
    }
    if workers > 1:
        _ignore_sighup_until_served()
        os.environ[PARENT_PID_ENV] = str(os.getpid())
        if args.config:
            os.environ[CONFIG_ENV] = args.config
        from gateway.supervisor import run_workers

        run_workers("gateway.cli:app_factory", workers, options)
    else:
        _defer_sighup_until_served()
        uvicorn.run(_create(config), **options)  # type: ignore[arg-type]
    return 0


def protocol_factory(config: GatewayConfig) -> Callable[..., asyncio.Protocol]:
    """uvicorn's ``http`` option: its httptools protocol with the connection limits of
    ``server`` (a partial of a module-level class, so it pickles into worker processes)."""
    from gateway.server_protocol import ConnectionLimits, GatewayHttpProtocol

    server = config.server
    limits = ConnectionLimits(
        max_header_bytes=server.max_header_bytes,
        max_headers=server.max_headers,
        header_timeout_s=server.header_timeout_s,
        body_timeout_s=server.body_timeout_s,
    )
    return functools.partial(GatewayHttpProtocol, limits=limits)


def _log_console(config: GatewayConfig, host: str, port: int) -> None:
    shown = "localhost" if host in ("0.0.0.0", "::", "") else f"[{host}]" if ":" in host else host
    key = "console.admin_key" if config.console.admin_key is not None else "the inner API key"
    logging.getLogger("dify_gateway").info(
        "operator console at http://%s:%d/console/ (sign in with %s)", shown, port, key
    )


def _check_config(args: argparse.Namespace) -> int:
    config = _load(args.config)
    report = {
        "source": config.source,
        "inner_api_key": "<set>" if config.dify.inner_api_key else f"<missing: set {INNER_API_KEY_ENV}>",
        "dify_api_url": config.dify.api_url,
        "forwarding": _forwarding(config),
        "routes": RouteTable(config.routes).describe(),
        "backends": _backends(config),
        "summary_model": config.summary_model.model if config.summary_model else None,
        "embedding_cache": _cache(config),
        "serverless": _serverless(config),
        "console": _console(config),
        "limits": config.limits.model_dump(),
        "route_limits": {  # the keys a route overrides, by the route's label in errors and logs
            shown["route"]: route.limits.model_dump(exclude_unset=True)
            for shown, route in zip(RouteTable(config.routes).describe(), config.routes, strict=True)
            if route.limits is not None
        },
        "connections": {  # what one HTTP connection may cost (gateway.server_protocol)
            key: getattr(config.server, key)
            for key in ("max_header_bytes", "max_headers", "header_timeout_s", "body_timeout_s", "keep_alive_timeout_s")
        },
        "ledger": _ledger(config),
        "budgets": config.budgets.model_dump(mode="json") if config.budgets.enabled else None,
        "rate_limits": config.rate_limits.model_dump(mode="json", exclude_none=True)
        if config.rate_limits.enabled
        else None,
        "resilience": {
            "retry": config.resilience.retry.model_dump(),
            "breaker": config.resilience.breaker.model_dump(),
            "max_in_flight": config.server.max_in_flight,
            "drain": {"grace_s": config.server.drain_grace_s, "timeout_s": config.server.drain_timeout_s},
        },
    }
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    return 0


def _backends(config: GatewayConfig) -> dict[str, dict[str, str]]:
    """Per route (by its label in errors and logs), what serves each target: the backend kind
    (explicit or derived from the model prefix; validated when the file was loaded)."""
    shown = RouteTable(config.routes).describe()
    return {
        str(row["route"]): {t.model: resolve_backend(t, t.model).kind for t in [*route.targets, *route.fallbacks]}
        for row, route in zip(shown, config.routes, strict=True)
    }


def _forwarding(config: GatewayConfig) -> str:
    if not config.dify.api_url:
        return "off: paths the gateway does not serve get a 404 envelope error"
    unrouted = "forwarded" if config.dify.passthrough else "answered with a no-route error"
    return f"to {config.dify.api_url}; model calls without a route are {unrouted}"


def _cache(config: GatewayConfig) -> dict[str, object]:
    cache, settings = config.cache, config.cache.embeddings
    if not settings.enabled:
        return {"enabled": False}
    redis = cache.redis_url is not None or cache.redis_mode == "sentinel"
    return {
        "enabled": True,
        "store": f"redis ({cache.redis_mode}){' + in-process L1' if settings.l1_max_bytes else ''}"
        if redis
        else "in-process",
        "redis_url": "<set>" if cache.redis_url else None,
        "scope": settings.scope,
        "ttl_s": settings.ttl_s,
    }


def _ledger(config: GatewayConfig) -> dict[str, object]:
    """Where usage rows go (the database URL without its credentials)."""
    settings = config.ledger
    if not settings.enabled:
        return {"enabled": False}
    target = resolve_database_url(settings)
    return {
        "enabled": True,
        "database": target.display,
        "retention_days": settings.retention_days,
        "migrate_on_start": settings.migrate_on_start,
    }


def _migrate(args: argparse.Namespace) -> int:
    return run_migrate(_load(args.config))


def _usage(args: argparse.Namespace) -> int:
    return run_usage(args, _load(args.config))


def _console(config: GatewayConfig) -> dict[str, object]:
    if not config.console.enabled:
        return {"enabled": False}
    return {"enabled": True, "admin_key": "<set>" if config.console.admin_key else "<the inner API key>"}


def _serverless(config: GatewayConfig) -> dict[str, object]:
    settings = config.serverless
    if not settings.enabled:
        return {"enabled": False}
    return {
        "enabled": True,
        "default_tenant": settings.default_tenant,
        "sessions_mapped": len(settings.tenants),
        "api_key": "<set>" if settings.api_key else "<none: protect the endpoint by network policy>",
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dify-gateway", description="Model gateway for Dify's plugin daemon.")
    parser.add_argument("--version", action="version", version=f"dify-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the inner API")
    serve.add_argument("--config", help=f"configuration file (default: ${CONFIG_ENV}, else embedded defaults)")
    serve.add_argument("--host", help=f"listen address (default: ${HOST_ENV}, else server.host, 0.0.0.0)")
    serve.add_argument("--port", type=int, help=f"listen port (default: ${PORT_ENV}, else server.port, 8080)")
    serve.add_argument(
        "--workers",
        type=_workers_arg,
        help=f"worker processes, a number or 'auto' (default: ${WORKERS_ENV}, else auto: one per available CPU, "
        f"cgroup limits included, at most {AUTO_WORKERS_CAP})",
    )
    serve.add_argument(
        "--console", action="store_true", help=f"serve the operator console at /console/ (as ${CONSOLE_ENV}=1)"
    )
    serve.set_defaults(run=_serve)
    check = sub.add_parser("check-config", help="validate the configuration and print the route table")
    check.add_argument("--config", help=f"configuration file (default: ${CONFIG_ENV}, else embedded defaults)")
    check.set_defaults(run=_check_config)
    migrate = sub.add_parser("migrate", help="create or upgrade the usage ledger's database schema")
    migrate.add_argument("--config", help=f"configuration file (default: ${CONFIG_ENV}, else embedded defaults)")
    migrate.set_defaults(run=_migrate)
    usage = sub.add_parser("usage", help="report usage and spend from the ledger")
    add_usage_arguments(usage)
    usage.set_defaults(run=_usage)
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result
