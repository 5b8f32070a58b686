"""Configuration reload without a restart: on SIGHUP, or when the watched file changes.

The file is loaded and validated first; an invalid one changes nothing (the reason is
logged and shown in the console). A valid one becomes a new ``Services`` around the same
long-lived objects (``gateway.services.rebuild_services``) and is swapped in at once: a
request already running finishes on the services it started with. Settings whose objects
cannot be rebuilt under running requests (the listener, the cache, tracing, the console,
the ledger, the breakers' thresholds, the inner API key) keep their running values and are
reported as needing a restart. Budgets and rate limits change in place (the governor keeps
its counters), unless the process started with neither.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Literal

from gateway.catalog import preload_list
from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.errors import GatewayError
from gateway.services import Services, local_models, rebuild_services

log = logging.getLogger("dify_gateway")

ReloadResult = Literal["applied", "unchanged", "invalid"]

# server.* settings a reload applies; the others (listener, limits on connections, drain,
# in-flight cap, logging set-up) are read once at start-up.
LIVE_SERVER_SETTINGS = frozenset({"request_log", "max_body_bytes", "preload_local_models"})
# Whole sections read once at start-up.
RESTART_SECTIONS = ("cache", "tracing", "console", "ledger")
# Budgets and rate limits change live, except switched on in a process that started with
# neither (it has no governor to count them; see gateway.limits.build_governor).
GOVERNANCE_SECTIONS = ("budgets", "rate_limits")

# A SIGHUP that arrives while a process is still starting (loading the configuration,
# models, the ledger) is remembered here and applied once it serves: the file may have
# changed after this process read it, and the sender expects it to be used.
_early_sighup = threading.Event()


def remember_early_sighup(sig: int, frame: FrameType | None) -> None:
    """The SIGHUP handler until the app installs its own."""
    _early_sighup.set()


def take_early_sighup() -> bool:
    """Whether a SIGHUP arrived before the app served (and forget it)."""
    arrived = _early_sighup.is_set()
    _early_sighup.clear()
    return arrived


@dataclass(frozen=True, slots=True)
class ReloadStatus:
    """The last reload, as the console and the logs report it."""

    at: float  # wall-clock time
    trigger: str  # "SIGHUP", "file changed", ...
    result: ReloadResult
    message: str
    needs_restart: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": round(self.at, 3),
            "trigger": self.trigger,
            "result": self.result,
            "message": self.message,
            "needs_restart": self.needs_restart,
        }


def keep_restart_settings(running: GatewayConfig, loaded: GatewayConfig) -> tuple[GatewayConfig, list[str]]:
    """``loaded`` with every setting that needs a restart put back to its running value, and
    the dotted names of those that differed (what the operator must restart to apply)."""
    changed: list[str] = []
    update: dict[str, Any] = {}
    sections = list(RESTART_SECTIONS)
    governed = running.budgets.enabled or running.rate_limits.enabled
    if not governed and (loaded.budgets.enabled or loaded.rate_limits.enabled):
        sections += GOVERNANCE_SECTIONS
    for section in sections:
        changed += _changed_fields(section, getattr(running, section), getattr(loaded, section))
        update[section] = getattr(running, section)
    server_fixed = [name for name in type(running.server).model_fields if name not in LIVE_SERVER_SETTINGS]
    changed += _changed_fields("server", running.server, loaded.server, server_fixed)
    update["server"] = loaded.server.model_copy(update={name: getattr(running.server, name) for name in server_fixed})
    changed += _changed_fields("resilience", running.resilience, loaded.resilience, ["breaker"])
    update["resilience"] = loaded.resilience.model_copy(update={"breaker": running.resilience.breaker})
    changed += _changed_fields("dify", running.dify, loaded.dify, ["inner_api_key"])
    update["dify"] = loaded.dify.model_copy(update={"inner_api_key": running.dify.inner_api_key})
    changed += _changed_fields("serverless", running.serverless, loaded.serverless, ["enabled"])
    update["serverless"] = loaded.serverless.model_copy(update={"enabled": running.serverless.enabled})
    return loaded.model_copy(update=update), changed


def _changed_fields(section: str, running: Any, loaded: Any, names: list[str] | None = None) -> list[str]:
    names = list(type(running).model_fields) if names is None else names
    return [f"{section}.{name}" for name in names if getattr(running, name) != getattr(loaded, name)]


def same_effect(a: GatewayConfig, b: GatewayConfig) -> bool:
    """Whether two configurations would build the same services (the file's name aside)."""
    return a.model_copy(update={"source": ""}) == b.model_copy(update={"source": ""})


class Reloader:
    """Loads, checks and applies a configuration file; one reload at a time.

    ``current`` returns the running services; ``swap`` installs new ones.
    """

    def __init__(
        self,
        path: str | None,
        current: Callable[[], Services],
        swap: Callable[[Services], None],
    ) -> None:
        self.path = path
        self._current = current
        self._swap = swap
        self.last: ReloadStatus | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def request(self, trigger: str) -> None:
        """Schedule a reload from the event loop's thread (a signal handler's callback)."""
        task = asyncio.get_running_loop().create_task(self.reload(trigger))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self, trigger: str) -> ReloadStatus:
        """Reload now, or after the reload in progress (each one reads the file afresh)."""
        async with self._lock:
            try:
                return await self._reload_once(trigger)
            except Exception as exc:  # a fault of the gateway's own: the running configuration stays
                log.exception("configuration reload (%s): unexpected error", trigger)
                return self._record(trigger, "invalid", f"unexpected error: {type(exc).__name__}", [])

    async def _reload_once(self, trigger: str) -> ReloadStatus:
        running = self._current()
        try:
            loaded = await asyncio.to_thread(load_config, self.path)
            config, needs_restart = keep_restart_settings(running.config, loaded)
            if same_effect(config, running.config):
                status = self._record(trigger, "unchanged", "the configuration is unchanged", needs_restart)
                return status
            services = rebuild_services(running, config)
            added = [name for name in local_models(config) if name not in local_models(running.config)]
            if added:
                services.backends.check_local(added)  # a missing package fails the reload, not calls
        except ConfigError as exc:
            return self._record(trigger, "invalid", str(exc), [])
        except (GatewayError, ValueError) as exc:
            message = exc.message if isinstance(exc, GatewayError) else str(exc)
            return self._record(trigger, "invalid", f"{self.path or '<embedded defaults>'}: {message}", [])
        if services.governor is not None:  # kept across reloads (its counters); the limits are new
            services.governor.update(services.config.budgets, services.config.rate_limits)
        self._swap(services)
        preload = preload_list(added, config.server.preload_local_models)
        if preload:
            task = asyncio.get_running_loop().create_task(services.backends.preload_local(preload))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        routes = len(config.routes)
        return self._record(trigger, "applied", f"{config.source}: {routes} route(s)", needs_restart)

    def _record(self, trigger: str, result: ReloadResult, message: str, needs_restart: list[str]) -> ReloadStatus:
        services = self._current()
        message = services.redactor(message)
        status = ReloadStatus(time.time(), trigger, result, message, needs_restart)
        self.last = status
        services.request_metrics.config_reloaded(result)
        later = f"; needs a restart to change: {', '.join(needs_restart)}" if needs_restart else ""
        if result == "invalid":
            log.error("configuration reload (%s) failed, the running configuration is kept: %s", trigger, message)
        else:
            log.info("configuration reload (%s) %s: %s%s", trigger, result, message, later)
        return status


def file_signature(path: str) -> tuple[object, ...] | None:
    """What changes when the file does, also when a Kubernetes ConfigMap volume swaps the
    symlink it reaches the file through (``os.stat`` follows it to the new file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.path.realpath(path), st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def file_digest(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return None


class ConfigWatcher:
    """Polls ``path`` every ``interval_s`` and asks for a reload when its content changes.

    Polling, not inotify: a ConfigMap update replaces a directory symlink, which inotify
    on the file itself never reports, and a poll of one ``stat`` costs nothing.
    """

    def __init__(self, path: str, interval_s: float, on_change: Callable[[str], None]) -> None:
        self._path = path
        self._interval_s = interval_s
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None
        # As the file is now (just loaded): a change from here on is a change.
        self._signature = file_signature(path)
        self._digest = file_digest(path)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            now = file_signature(self._path)
            if now == self._signature or now is None:
                continue  # unchanged, or gone for a moment mid-swap
            # An editor may still be writing: act once the file has held still briefly.
            await asyncio.sleep(min(0.2, self._interval_s))
            if file_signature(self._path) != now:
                continue
            self._signature = now
            content = file_digest(self._path)
            if content is not None and content != self._digest:
                self._digest = content
                self._on_change("file changed")
