"""Limits from the environment: defaults for every client, per-client overrides, global spend caps
and per-backend concurrency caps. Every limit is optional; None means "no limit"."""

from __future__ import annotations

from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ClientLimits(BaseModel):
    """One client's limits (COMFY_ROUTER_CLIENT_LIMITS entries override the defaults field by field)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_min: int | None = Field(default=None, ge=0)
    images_per_day: int | None = Field(default=None, ge=0)
    gpu_usd_per_day: float | None = Field(default=None, ge=0)
    hosted_usd_per_day: float | None = Field(default=None, ge=0)
    max_running: int | None = Field(default=None, ge=0)


def _env(name: str) -> AliasChoices:
    return AliasChoices(f"COMFY_ROUTER_{name.upper()}", name)


class LimitsSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    requests_per_min: int | None = Field(default=None, ge=0, validation_alias=_env("requests_per_min"))
    images_per_day: int | None = Field(default=None, ge=0, validation_alias=_env("images_per_day"))
    gpu_usd_per_day: float | None = Field(default=None, ge=0, validation_alias=_env("gpu_usd_per_day"))
    hosted_usd_per_day: float | None = Field(default=None, ge=0, validation_alias=_env("hosted_usd_per_day"))
    max_running_per_client: int | None = Field(
        default=None, ge=0, validation_alias=_env("max_running_per_client")
    )
    global_gpu_usd_per_day: float | None = Field(
        default=None, ge=0, validation_alias=_env("global_gpu_usd_per_day")
    )
    global_hosted_usd_per_day: float | None = Field(
        default=None, ge=0, validation_alias=_env("global_hosted_usd_per_day")
    )
    max_running_per_backend: int | None = Field(
        default=None, ge=0, validation_alias=_env("max_running_per_backend")
    )
    # A running slot not given back within this time (its router died) is reclaimed when needed.
    hold_max_s: float = Field(default=3600.0, gt=0, validation_alias=_env("hold_max_s"))
    spend_warn_ratio: float = Field(default=0.8, gt=0, le=1, validation_alias=_env("spend_warn_ratio"))
    # JSON: {"client-a": {"images_per_day": 100, "max_running": 2}, ...}
    clients: dict[str, ClientLimits] = Field(
        default_factory=dict, validation_alias=AliasChoices("COMFY_ROUTER_CLIENT_LIMITS", "clients")
    )
    # JSON: {"gpu-a": 2, ...}: overrides max_running_per_backend for those backends
    backends: dict[str, int] = Field(
        default_factory=dict, validation_alias=AliasChoices("COMFY_ROUTER_BACKEND_MAX_RUNNING", "backends")
    )

    def for_client(self, client_id: str) -> ClientLimits:
        default = ClientLimits(
            requests_per_min=self.requests_per_min,
            images_per_day=self.images_per_day,
            gpu_usd_per_day=self.gpu_usd_per_day,
            hosted_usd_per_day=self.hosted_usd_per_day,
            max_running=self.max_running_per_client,
        )
        override = self.clients.get(client_id)
        if override is None:
            return default
        return default.model_copy(update=override.model_dump(exclude_unset=True))

    def for_backend(self, backend_id: str) -> int | None:
        return self.backends.get(backend_id, self.max_running_per_backend)

    @property
    def caps_backends(self) -> bool:
        return self.max_running_per_backend is not None or bool(self.backends)
