"""How to reach a Cognigy tenant: built from an Airflow Connection by the hook, or directly in code."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

Dialect = Literal["rest-v2", "training-jobs"]

TRAINING_JOBS_SCOPES = "ai:nlp:read ai:nlp:write ai:training:execute ai:models:rollback"


class ConnectionConfig(BaseModel):
    """Settings of one tenant connection. Secrets are SecretStr so they never print."""

    # a validation error must not echo its input: that would print the raw API key or client secret
    model_config = ConfigDict(hide_input_in_errors=True)

    base_url: str = Field(description="Tenant API base, e.g. https://api-app.cognigy.ai (no /new/v2.0).")
    dialect: Dialect = Field("rest-v2", description="rest-v2 = the real Cognigy REST API v2.0 (default).")
    api_key: SecretStr | None = Field(None, description="Cognigy API key, sent as X-API-Key.")
    client_id: str | None = Field(None, description="OAuth2 client id (client credentials grant).")
    client_secret: SecretStr | None = None
    token_url: str | None = Field(None, description="OAuth2 token URL; default per dialect.")
    scopes: str | None = Field(None, description="Space-separated OAuth2 scopes to request.")
    verify: bool | str = Field(True, description="TLS verification: true, false, or a CA bundle path.")
    timeout_seconds: float = Field(30.0, gt=0, le=300)
    console_url: str | None = Field(None, description="Cognigy UI base for links (optional).")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("verify")
    @classmethod
    def _ca_bundle_exists(cls, value: bool | str) -> bool | str:
        if isinstance(value, bool):
            return value
        if value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if not os.path.exists(value):
            raise ValueError(f"CA bundle {value!r} does not exist (verify/ca_bundle must name a PEM file)")
        return value

    @model_validator(mode="after")
    def _some_credentials(self) -> ConnectionConfig:
        has_oauth = bool(self.client_id and self.client_secret)
        if not (self.api_key or has_oauth):
            raise ValueError("give an API key (password field) or an OAuth2 client id and secret")
        if self.dialect == "training-jobs" and not has_oauth:
            raise ValueError("the training-jobs dialect needs OAuth2 client credentials (client id/secret)")
        return self

    @property
    def uses_oauth(self) -> bool:
        """OAuth2 wins when both are given, except API keys are preferred on rest-v2 if no token URL."""
        if self.dialect == "training-jobs":
            return True
        return bool(self.client_id and self.client_secret and not self.api_key)

    @property
    def effective_token_url(self) -> str:
        if self.token_url:
            return self.token_url
        if self.dialect == "training-jobs":
            return f"{self.base_url}/oauth/token"
        return f"{self.base_url}/auth/oauth2/token"

    @property
    def effective_scopes(self) -> str | None:
        if self.scopes:
            return self.scopes
        return TRAINING_JOBS_SCOPES if self.dialect == "training-jobs" else None

    def secret_values(self) -> list[str]:
        """The raw secrets, so callers can scrub them from free text."""
        return [s.get_secret_value() for s in (self.api_key, self.client_secret) if s is not None]
