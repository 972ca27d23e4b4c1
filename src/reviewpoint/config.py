"""Settings read from `REVIEWPOINT_*` environment variables and an optional `.env` file."""

from __future__ import annotations

import os
import secrets
from typing import Annotated, Literal

from fastapi import Depends, Request
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from reviewpoint.features.catalog import FEATURES

MIN_PROD_SECRET_LENGTH = 32
MIN_METRICS_TOKEN_LENGTH = 16
# Secrets once shipped in this code (a token forged with one exported every user):
# refused in every environment, in case one was copied into a `.env`.
PUBLISHED_JWT_SECRETS = frozenset({"reviewpoint-dev-secret-do-not-use-in-production"})
# Pool connections kept for everything but exports: logins, the admin API,
# readiness probes and the credential checks that precede exports.
REQUEST_CONNECTIONS = 4


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="REVIEWPOINT_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    # Unset is not "dev": about secrets it is as strict as prod (see signing_secret).
    env: Literal["dev", "test", "prod"] | None = None
    db_url: str = "sqlite+aiosqlite:///./reviewpoint.db"
    # Where exports read, e.g. a streaming replica; unset: the primary (db_url).
    # Everything else, credential checks of exports included, uses the primary.
    export_db_url: str | None = None
    # No default: a secret in the code is a secret anyone can sign tokens with.
    jwt_secret_key: SecretStr | None = None
    # Keys the pseudonyms of anonymized exports (exports/anonymize.py); required
    # unless env is dev or test while they are enabled. A new key makes new
    # pseudonyms, unlinkable to the old.
    anonymize_key: SecretStr | None = None
    access_token_expire_minutes: int = Field(default=30, gt=0, le=60 * 24 * 30)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # JSON lines for log collectors (suggested in prod), text for people reading a terminal.
    log_format: Literal["text", "json"] = "text"
    # How long `serve` keeps an idle HTTP/1.1 connection open. Longer than the
    # idle timeout of whatever sits in front (AWS ALB 60 s, nginx 60 s): a proxy
    # or client reusing a connection the server is closing at that moment gets
    # an error instead of an answer (uvicorn's own default is 5 s).
    keep_alive_seconds: int = Field(default=75, ge=1, le=3600)
    # Prometheus metrics at /metrics; off: no route (404) and nothing collected.
    metrics: bool = True
    # When set, /metrics wants `Authorization: Bearer <token>`; unset, it is open
    # and meant to be reachable only from the monitoring network.
    metrics_token: SecretStr | None = None

    @field_validator("metrics_token")
    @classmethod
    def _long_metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_METRICS_TOKEN_LENGTH:
            raise ValueError(
                f"must be a random string of at least {MIN_METRICS_TOKEN_LENGTH} characters"
            )
        return value

    # Rows per database round trip in an export: large enough that per-chunk
    # overhead vanishes, small enough that a chunk stays a few MB.
    export_chunk_rows: int = Field(default=10_000, ge=1, le=1_000_000)
    # PostgreSQL connections that build one export's chunks at once, sharing one
    # snapshot: two keep both cores of a small server busy. SQLite always uses one.
    export_connections: int = Field(default=2, ge=1, le=8)
    # Largest request body accepted; every JSON body this API takes is a few hundred
    # bytes, and the limit is checked before authentication, so anonymous callers
    # cannot make the server buffer more than this.
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)

    # Connections and admission (see db.Database for how the pool is split).
    # Database connections one worker process may hold at once.
    db_pool_size: int = Field(default=10, ge=4, le=200)
    # Seconds a request waits for a free connection before it gets 503.
    db_pool_timeout: float = Field(default=5.0, gt=0, le=60)
    # Exports running at once in one worker; unset: derived from the pool so that
    # requests always keep REQUEST_CONNECTIONS of their own.
    export_max_concurrent: int | None = Field(default=None, ge=1, le=100)
    # An export whose client accepts no data (64 KiB) for this long is aborted.
    export_send_timeout: float = Field(default=30.0, gt=0, le=3600)
    # No export runs longer than this, however fast its client reads.
    export_max_seconds: float = Field(default=3600.0, gt=0, le=24 * 3600)

    # Admission (see reviewpoint/admission/): where budgets and export leases live
    # (memory:// per worker process, or one Redis shared by every worker), the
    # budgets, and how many exports one credential may run at once.
    rate_limit_storage: str = "memory://"
    # Keys in the store start with this, so deployments sharing one Redis keep
    # separate budgets.
    rate_limit_prefix: str = Field(default="reviewpoint", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    export_rate_limit: str = "30/minute"
    login_rate_limit: str = "10/minute"
    export_max_concurrent_per_credential: int = Field(default=2, ge=1)

    # Export audit records older than this are removed by `reviewpoint audit prune`.
    audit_retention_days: int = Field(default=365, ge=1, le=100 * 365)

    @field_validator("rate_limit_storage")
    @classmethod
    def _known_admission_store(cls, value: str) -> str:
        from reviewpoint.admission.store import check_storage_url

        check_storage_url(value)
        return value

    @field_validator("export_rate_limit", "login_rate_limit")
    @classmethod
    def _one_rate_limit(cls, value: str) -> str:
        from reviewpoint.admission.rate_limits import Policy

        Policy.parse("setting", value)
        return value

    # Feature flags' defaults; see features/defaults.py for how these combine.
    features: Annotated[list[str] | None, NoDecode] = None
    feature_users: bool | None = None
    feature_users_export: bool | None = None
    feature_users_export_full: bool | None = None
    feature_users_export_alive: bool | None = None
    feature_users_export_simple: bool | None = None
    feature_users_export_anonymized: bool | None = None
    feature_console: bool | None = None

    # Seconds between two reads of the admins' overrides in each worker: a change
    # reaches every worker within this plus one query, without a query per request.
    feature_refresh_seconds: float = Field(default=2.0, ge=0.1, le=60)

    @field_validator("features", mode="before")
    @classmethod
    def _split_features(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("db_url", "export_db_url")
    @classmethod
    def _known_driver(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(
            ("sqlite+aiosqlite://", "postgresql+asyncpg://")
        ):
            raise ValueError(
                "must start with sqlite+aiosqlite:// or postgresql+asyncpg:// "
                f"(got {value.split('://', 1)[0]}://...)"
            )
        return value

    @model_validator(mode="after")
    def _no_weak_secret(self) -> Settings:
        # Commands that sign nothing (db upgrade, users create...) run without a
        # secret unless env is prod; serving without one is refused by signing_secret.
        secret = self.jwt_secret_key.get_secret_value() if self.jwt_secret_key else None
        if secret in PUBLISHED_JWT_SECRETS:
            raise ValueError(
                "REVIEWPOINT_JWT_SECRET_KEY is a value published in reviewpoint's source; "
                "set a random string of at least "
                f"{MIN_PROD_SECRET_LENGTH} characters (or unset it in dev and test)"
            )
        strict = self.env not in ("dev", "test")
        if (secret is None and self.env == "prod") or (
            secret is not None and strict and len(secret) < MIN_PROD_SECRET_LENGTH
        ):
            raise ValueError(
                "REVIEWPOINT_JWT_SECRET_KEY must be set to a random string of at least "
                f"{MIN_PROD_SECRET_LENGTH} characters unless REVIEWPOINT_ENV is dev or test"
            )
        anonymize_key = self.anonymize_key.get_secret_value() if self.anonymize_key else None
        if anonymize_key is not None and strict and len(anonymize_key) < MIN_PROD_SECRET_LENGTH:
            raise ValueError(
                "REVIEWPOINT_ANONYMIZE_KEY must be a random string of at least "
                f"{MIN_PROD_SECRET_LENGTH} characters unless REVIEWPOINT_ENV is dev or test"
            )
        if self.features is not None:
            unknown = [name for name in self.features if name not in FEATURES]
            if unknown:
                raise ValueError(
                    f"REVIEWPOINT_FEATURES names unknown feature(s) {', '.join(unknown)}; "
                    f"known: {', '.join(FEATURES)}"
                )
        return self

    @model_validator(mode="after")
    def _export_database_like_the_primary(self) -> Settings:
        # Pools, timeouts and the export's SQL are chosen for the primary's kind: a
        # replica is of the same kind (PostgreSQL streams to PostgreSQL).
        if self.export_db_url is not None and self.export_db_url.startswith(
            "sqlite"
        ) != self.db_url.startswith("sqlite"):
            raise ValueError(
                "REVIEWPOINT_EXPORT_DB_URL must use the same database as REVIEWPOINT_DB_URL "
                "(both sqlite+aiosqlite:// or both postgresql+asyncpg://)"
            )
        return self

    @model_validator(mode="after")
    def _requests_keep_connections(self) -> Settings:
        if self.db_pool_size - self.export_slots * self.connections_per_export < 2:
            raise ValueError(
                f"REVIEWPOINT_DB_POOL_SIZE={self.db_pool_size} leaves fewer than 2 connections "
                f"for requests once {self.export_slots} export(s) hold "
                f"{self.connections_per_export} each: raise it, or lower "
                "REVIEWPOINT_EXPORT_MAX_CONCURRENT or REVIEWPOINT_EXPORT_CONNECTIONS"
            )
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")

    @property
    def connections_per_export(self) -> int:
        return 1 if self.is_sqlite else self.export_connections

    @property
    def export_slots(self) -> int:
        """Exports one worker runs at once: what the pool holds beyond REQUEST_CONNECTIONS
        (SQLite: at most one per core)."""
        if self.export_max_concurrent is not None:
            return self.export_max_concurrent
        slots = max(1, (self.db_pool_size - REQUEST_CONNECTIONS) // self.connections_per_export)
        if self.is_sqlite:
            # SQLite builds each export inside this process, one CPU-bound thread
            # apiece: more at once than cores only slows them all and starves
            # the event loop (PostgreSQL's exports run in its own backends).
            slots = min(slots, os.cpu_count() or 1)
        return slots


class SettingsError(Exception):
    """A setting is invalid; the message is one line an operator can act on."""


def signing_secret(settings: Settings) -> str:
    """The key that signs access tokens: the configured one, else a random one in dev/test.

    A random key lives as long as the app (tokens die with it): that is the price
    of never shipping one. An unset REVIEWPOINT_ENV is treated as prod here, so a
    server started without any configuration cannot be run with a guessable key.
    """
    if settings.jwt_secret_key is not None:
        return settings.jwt_secret_key.get_secret_value()
    if settings.env in ("dev", "test"):
        return secrets.token_urlsafe(32)
    raise SettingsError(
        "invalid configuration: REVIEWPOINT_JWT_SECRET_KEY must be set to serve "
        f"(a random string of at least {MIN_PROD_SECRET_LENGTH} characters); "
        "with REVIEWPOINT_ENV=dev or test a random one is generated"
    )


def describe_validation_error(error: ValidationError) -> str:
    """One line per bad setting, named as the operator would set it."""
    parts = []
    for item in error.errors():
        field = "_".join(str(loc) for loc in item["loc"])
        name = f"REVIEWPOINT_{field.upper()}" if field else "settings"
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(message if message.startswith("REVIEWPOINT_") else f"{name}: {message}")
    return "; ".join(parts)


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's multi-line report into a `SettingsError`."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise SettingsError(f"invalid configuration: {describe_validation_error(error)}") from None


def get_app_settings(request: Request) -> Settings:
    """The settings this app was created with (tests build apps with their own)."""
    settings: Settings = request.app.state.settings
    return settings


AppSettings = Annotated[Settings, Depends(get_app_settings)]


def get_jwt_secret(request: Request) -> str:
    """The key this app signs and checks tokens with, resolved once by create_app."""
    secret: str = request.app.state.jwt_secret
    return secret


JwtSecret = Annotated[str, Depends(get_jwt_secret)]
