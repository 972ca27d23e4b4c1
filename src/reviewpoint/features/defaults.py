"""A flag's default, from the environment; an admin's override in the database beats it.

The most specific setting wins, so a whole family can be off with one member on:

1. `REVIEWPOINT_FEATURE_USERS_EXPORT_FULL=true|false` decides that one feature;
2. a name listed in `REVIEWPOINT_FEATURES=a,b` is on;
3. `REVIEWPOINT_FEATURE_USERS=true|false` decides every `users:` feature;
4. when `REVIEWPOINT_FEATURES` is set, it is an allow-list: unlisted features are off;
5. otherwise every feature is on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from reviewpoint.config import Settings
from reviewpoint.features.catalog import FEATURES

DefaultSource = Literal["environment", "default"]


@dataclass(frozen=True)
class EnvDefault:
    """A flag's value without an override, and whether a setting chose it (rules 1-4)."""

    enabled: bool
    source: DefaultSource


def _setting_name(name: str) -> str:
    """`users:export_full` -> `feature_users_export_full`."""
    return "feature_" + name.replace(":", "_")


def env_default(settings: Settings, name: str) -> EnvDefault:
    if name not in FEATURES:
        raise KeyError(f"unknown feature {name!r}")
    own: bool | None = getattr(settings, _setting_name(name))
    if own is not None:
        return EnvDefault(own, "environment")
    if settings.features is not None and name in settings.features:
        return EnvDefault(True, "environment")
    family: bool | None = getattr(settings, _setting_name(name.split(":", 1)[0]))
    if family is not None:
        return EnvDefault(family, "environment")
    if settings.features is not None:
        return EnvDefault(False, "environment")
    return EnvDefault(True, "default")


def is_enabled(settings: Settings, name: str) -> bool:
    """The environment's answer alone; what a worker serves is `FeatureFlags.is_enabled`."""
    return env_default(settings, name).enabled


def env_defaults(settings: Settings) -> dict[str, EnvDefault]:
    return {name: env_default(settings, name) for name in FEATURES}


def enabled_features(settings: Settings) -> dict[str, bool]:
    return {name: is_enabled(settings, name) for name in FEATURES}
