"""The ledger's alembic migrations (environment and revisions), run by ``gateway.usage.migrate``."""

# The gateway's own version table, so the ledger can share a database with other
# alembic-managed schemas (Dify's own uses ``alembic_version``).
VERSION_TABLE = "dify_gateway_alembic_version"
