"""Configuration of the serverless transaction endpoint (the ``serverless:`` section).

Kept free of imports from ``gateway.config`` and ``gateway.app`` so that ``gateway.config``
can import ``ServerlessConfig`` without an import cycle.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

TenantId = Annotated[str, Field(min_length=1)]


class ServerlessConfig(BaseModel):
    """``POST /backwards-invocation/transaction``, the dify-plugin SDK's serverless path (spec 6).

    The SDK's request names no tenant, only a ``session_id``; the tenant whose routes (and
    cache scope) apply is looked up in ``tenants`` and falls back to ``default_tenant``.

    ``api_key``: when set, a request must carry it as the password of HTTP Basic auth (what
    the unmodified SDK sends when ``DIFY_PLUGIN_DAEMON_URL`` has user info, e.g.
    ``http://plugin:KEY@gateway:8080``; percent-encode special characters) or as
    ``Authorization: Bearer KEY``. Without it the endpoint is open to anyone who can reach it:
    protect it by network policy then.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    api_key: SecretStr | None = None
    default_tenant: TenantId | None = None
    # session_id -> tenant_id
    tenants: dict[str, TenantId] = Field(default_factory=dict)
    # Blank lines sent while a reply is pending; the SDK gives up after 250 s without a byte.
    heartbeat_s: float = Field(default=15.0, gt=0, le=120)

    @field_validator("api_key")
    @classmethod
    def _key_not_blank(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and not key.get_secret_value().strip():
            raise ValueError("an empty key would let anyone in: set a key or leave it out")
        return key

    @model_validator(mode="after")
    def _enabled_needs_a_tenant(self) -> ServerlessConfig:
        if self.enabled and self.default_tenant is None and not self.tenants:
            raise ValueError("enabled needs default_tenant or a tenants table (session_id: tenant_id)")
        return self

    def tenant_for(self, session_id: str) -> str | None:
        """The tenant a session's invocations run as, or None when the session is not mapped."""
        return self.tenants.get(session_id, self.default_tenant)
