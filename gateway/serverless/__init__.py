"""The dify-plugin SDK's serverless transaction endpoint (spec section 6).

- ``wire``: the SDK's request and the JSON-line events of the reply;
- ``endpoint``: ``ServerlessEndpoint``, which answers ``POST /backwards-invocation/transaction``.

The results' shapes as the daemon re-emits them are ``gateway.protocol.plugin_view``; the
``serverless:`` configuration section is ``ServerlessConfig`` in ``gateway.config``. The
package itself imports nothing.
"""
