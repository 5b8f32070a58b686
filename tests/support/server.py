"""Serves a gateway app on a real loopback port, in a thread, for black-box tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Self

import httpx
import orjson
import uvicorn

from gateway.app import Gateway, create_app
from gateway.config import parse_config

TEST_KEY = "test-inner-key"


def gateway_config(routes: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"dify": {"inner_api_key": TEST_KEY}, "routes": routes, **extra}


def one_target_route(model_type: str, provider: str, target: str, api_base: str) -> dict[str, Any]:
    """A route for ``model_type`` calls of ``provider`` to one ``target`` at ``api_base`` (a test key)."""
    return {
        "match": {"type": model_type, "provider": provider},
        "targets": [{"model": target, "api_base": api_base, "api_key": "sk-test"}],
    }


class AppServer:
    """Any ASGI app served by uvicorn on a free loopback port, in a thread."""

    def __init__(self, app: Any) -> None:
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, loop="asyncio", lifespan="on", log_level="warning")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the {type(self).__name__} test server did not start")
            time.sleep(0.005)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    @property
    def url(self) -> str:
        port = self._server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"


class GatewayServer(AppServer):
    def __init__(self, config: dict[str, Any]) -> None:
        self.app: Gateway = create_app(parse_config(config, "<test>", env={}))
        super().__init__(self.app)


class GatewayProcess:
    """``dify-gateway serve`` as a separate process (its own GIL, real signals), with a
    configuration written to ``directory``; ready (``/readyz`` 200) on entry."""

    def __init__(
        self,
        config: dict[str, Any],
        directory: Path,
        key: str = TEST_KEY,
        workers: int = 1,
        ready_timeout_s: float = 30,
        **env: str,
    ) -> None:
        self._config_path = directory / "gateway.yaml"
        self._config_path.write_text(orjson.dumps(config).decode())
        self._key = key
        self._workers = workers
        self._ready_timeout_s = ready_timeout_s
        self.last_readyz: bytes = b""
        self._env = env
        # Output goes to a file: an unread pipe fills up and then blocks the server's logging.
        self._log_path = directory / "gateway.log"
        self.process: subprocess.Popen[bytes] | None = None
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port: int = s.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        env = {k: v for k, v in os.environ.items() if (not k.startswith("DIFY_") or k == "DIFY_GATEWAY_DATA_DIR")}
        env.update({"DIFY_INNER_API_KEY": self._key, "NO_PROXY": "127.0.0.1,localhost", **self._env})
        command = [sys.executable, "-m", "gateway", "serve", "--config", str(self._config_path)]
        with self._log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*command, "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self._workers)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self._ready_timeout_s
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                reply = httpx.get(f"{self.url}/readyz", timeout=1)
                self.last_readyz = reply.content
                if reply.status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        output = self.stop()
        raise RuntimeError(f"the gateway process did not become ready:\n{output}")

    def stop(self) -> str:
        """Stop the process (SIGTERM, then SIGKILL) and return its output."""
        if self.process is None:
            return ""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self._log_path.read_text(errors="replace")

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        return self._log_path.read_text(errors="replace")
