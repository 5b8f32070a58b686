"""Serves a gateway app on a real loopback port, in a thread, for black-box tests."""

from __future__ import annotations

import threading
import time
from typing import Any, Self

import uvicorn

from gateway.app import Gateway, create_app
from gateway.config import parse_config

TEST_KEY = "test-inner-key"


def gateway_config(routes: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"dify": {"inner_api_key": TEST_KEY}, "routes": routes, **extra}


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
