"""Feature flags: operators switch endpoints off without a deploy.

The most specific setting wins, so a whole family can be off with one member on:

1. `REVIEWPOINT_FEATURE_USERS_EXPORT_FULL=true|false` decides that one feature;
2. a name listed in `REVIEWPOINT_FEATURES=a,b` is on;
3. `REVIEWPOINT_FEATURE_USERS=true|false` decides every `users:` feature;
4. when `REVIEWPOINT_FEATURES` is set, it is an allow-list: unlisted features are off;
5. otherwise every feature is on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reviewpoint.config import Settings

FEATURES = (
    "users:export",
    "users:export_full",
    "users:export_alive",
    "users:export_simple",
)


def _setting_name(name: str) -> str:
    """`users:export_full` -> `feature_users_export_full`."""
    return "feature_" + name.replace(":", "_")


def is_enabled(settings: Settings, name: str) -> bool:
    if name not in FEATURES:
        raise KeyError(f"unknown feature {name!r}")
    own: bool | None = getattr(settings, _setting_name(name))
    if own is not None:
        return own
    if settings.features is not None and name in settings.features:
        return True
    family: bool | None = getattr(settings, _setting_name(name.split(":", 1)[0]))
    if family is not None:
        return family
    return settings.features is None


def enabled_features(settings: Settings) -> dict[str, bool]:
    return {name: is_enabled(settings, name) for name in FEATURES}
