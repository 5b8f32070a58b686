"""The dify-plugin SDK's serverless transaction endpoint (spec section 6).

- ``config``: ``ServerlessConfig``, the ``serverless:`` configuration section;
- ``wire``: the SDK's request and the JSON-line events of the reply;
- ``plugin_view``: results in the shapes the daemon re-emits to plugins;
- ``endpoint``: ``ServerlessEndpoint``, which answers ``POST /backwards-invocation/transaction``.
"""

from __future__ import annotations

from gateway.serverless.config import ServerlessConfig
from gateway.serverless.endpoint import ServerlessEndpoint
from gateway.serverless.wire import TRANSACTION_PATH

__all__ = ["TRANSACTION_PATH", "ServerlessConfig", "ServerlessEndpoint"]
