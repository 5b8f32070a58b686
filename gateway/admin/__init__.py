"""The management API at ``/admin`` (FastAPI): usage reports, budget state, the ledger's and
the targets' state, with an OpenAPI document and a docs page. Behind the admin key."""

from gateway.admin.app import ADMIN_PREFIX, build_admin_app
from gateway.admin.source import AdminSource

__all__ = ["ADMIN_PREFIX", "AdminSource", "build_admin_app"]
