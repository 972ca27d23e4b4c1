"""Which feature flags exist: the one list settings, routes, the API and the CLI check."""

from __future__ import annotations

from reviewpoint.errors import ResourceNotFound

FEATURES = (
    "users:export",
    "users:export_full",
    "users:export_alive",
    "users:export_simple",
    "users:export_anonymized",
    # The operator console at /console (console/): its pages and its downloads.
    "console",
)


class UnknownFeature(ResourceNotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"Unknown feature '{name}'; known: {', '.join(FEATURES)}")


def known(name: str) -> str:
    """`name` if it is a flag, else `UnknownFeature` (404) naming the known ones."""
    if name not in FEATURES:
        raise UnknownFeature(name)
    return name
