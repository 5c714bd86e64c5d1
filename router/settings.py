"""Process settings from the environment (DESIGN.md section 5). `make run` needs none of them."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from router.limits.config import LimitsSettings


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    database_url: str = Field(
        default="sqlite:///comfy_router.db",
        validation_alias=AliasChoices("DATABASE_URL", "database_url"),
        description="SQLAlchemy URL; a SQLite file in the working directory by default.",
    )
    config_path: Path = Field(
        default=Path("models_config.json"),
        validation_alias=AliasChoices("COMFY_ROUTER_CONFIG", "config_path"),
    )
    comfyui_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("COMFYUI_URL", "comfyui_url"),
        description="One ComfyUI backend; replaces the catalog's backends.",
    )
    api_keys: str | None = Field(
        default=None, validation_alias=AliasChoices("COMFY_ROUTER_API_KEYS", "api_keys")
    )
    max_request_bytes: int = Field(
        default=32 * 1024 * 1024,
        validation_alias=AliasChoices("COMFY_ROUTER_MAX_REQUEST_BYTES", "max_request_bytes"),
        description="Largest request body accepted (413 above): 4 images of 5 MB in base64 fit.",
    )
    data_dir: Path = Field(
        default=Path("data"),
        validation_alias=AliasChoices("COMFY_ROUTER_DATA_DIR", "data_dir"),
        description="Where job outputs are kept.",
    )
    callback_hosts_csv: str = Field(
        default="",
        validation_alias=AliasChoices("COMFY_ROUTER_CALLBACK_HOSTS", "callback_hosts_csv"),
        description="Comma-separated host names that callback_url may point at (empty: callbacks refused).",
    )
    stall_min_s: float = Field(
        default=30.0,
        gt=0,
        validation_alias=AliasChoices("COMFY_ROUTER_STALL_MIN_S", "stall_min_s"),
        description="A running prompt with no progress for this long (or twice its estimate, if longer)"
        " is taken for a hung backend: cooldown and failover.",
    )
    # Quotas, spend caps and concurrency limits (COMFY_ROUTER_REQUESTS_PER_MIN ... see router/limits).
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    migrate_on_start: bool = Field(
        default=True, validation_alias=AliasChoices("COMFY_ROUTER_MIGRATE", "migrate_on_start")
    )

    def callback_hosts(self) -> frozenset[str]:
        return frozenset(h.strip().lower() for h in self.callback_hosts_csv.split(",") if h.strip())
