"""Per-key data limits: what an API key may take out, whatever it asks for.

Scopes say which export a key may call; limits narrow what that export holds
(least privilege, issue #12):

- `fields`: the columns the key may receive. `/export-full` without `fields`
  gives the default columns it may see, in their usual order; asking for any
  other column, or calling `/export` (always `id,email,name`) without all
  three allowed, is a 403 naming the column. A sync (`cursor=`) still gets
  `is_deleted` as its last column: a sync cannot be applied without it, and it
  tells only that a user the key may list left. Asked for by name, it is a
  column like any other.
- `anonymized_only`: emails and names are always pseudonyms. `anonymize`
  defaults to `true` for the key, `day` is allowed, `false` is a 403; an
  `email` filter is a 403 too, because a match would confirm that an address
  belongs to a user.

Applied once, in `ExportParameters.export_request`, to every export a key
makes over HTTP, after the parameters are parsed and before any row is read:
a refused request never gets a byte of data. Admin tokens and the CLI
(`reviewpoint export`, run with the database's own credentials) have none.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from reviewpoint.errors import NotPermitted
from reviewpoint.exports.anonymize import AnonymizeMode
from reviewpoint.exports.columns import CHOOSABLE, ExportSpec


def field_names(names: Iterable[str]) -> list[str]:
    """The allow-list a key is created with: known, distinct column names, in order.

    ValueError naming the first unknown or repeated name.
    """
    chosen: list[str] = []
    for raw in names:
        name = raw.strip()
        if name not in CHOOSABLE:
            raise ValueError(f"unknown field {name!r}; choose from {', '.join(CHOOSABLE)}")
        if name in chosen:
            raise ValueError(f"field {name!r} appears twice")
        chosen.append(name)
    if not chosen:
        raise ValueError("must name at least one field")
    return chosen


@dataclass(frozen=True)
class KeyLimits:
    """What one key may receive: `fields` None means every column its scopes allow."""

    fields: tuple[str, ...] | None = None
    anonymized_only: bool = False

    @property
    def unlimited(self) -> bool:
        return self.fields is None and not self.anonymized_only

    @property
    def view(self) -> str:
        """Names the limits in an export's ETag: two keys that see different data
        never share a 304."""
        if self.unlimited:
            return ""
        fields = "*" if self.fields is None else ",".join(self.fields)
        return f"fields={fields};anonymized_only={str(self.anonymized_only).lower()}"

    def narrow(self, spec: ExportSpec) -> ExportSpec:
        """A default column set (`/export-full` without `fields`) cut to what the key may see."""
        if self.fields is None:
            return spec
        allowed = set(self.fields)
        columns = tuple(column for column in spec.columns if column[0] in allowed)
        if not columns:
            # A key limited to columns outside the defaults (last_login_at, say)
            # must name them: an export without columns serves nobody.
            raise NotPermitted(
                "This API key may export none of the default fields; ask for "
                f"fields={','.join(self.fields)}."
            )
        return ExportSpec(stem=spec.stem, columns=columns)

    def check_columns(self, spec: ExportSpec) -> None:
        """403 naming every column of `spec` the key may not receive."""
        if self.fields is None:
            return
        forbidden = [name for name in spec.header if name not in self.fields]
        if forbidden:
            names = ", ".join(f"'{name}'" for name in forbidden)
            noun = "field" if len(forbidden) == 1 else "fields"
            raise NotPermitted(
                f"This API key may not export the {noun} {names}. "
                f"Allowed: {', '.join(self.fields)}."
            )

    def check_email_filter(self, email: str | None) -> None:
        if self.anonymized_only and email is not None:
            raise NotPermitted(
                "This API key gets anonymized data only: it may not filter by email "
                "(a match would confirm that an address belongs to a user)."
            )

    def anonymize_mode(self, asked: AnonymizeMode, *, explicit: bool) -> AnonymizeMode:
        """The `anonymize` mode the export runs with: `true` by default for an
        anonymized-only key, which may never get `false`."""
        if not self.anonymized_only:
            return asked
        if not explicit:
            return "true"
        if asked == "false":
            raise NotPermitted(
                "This API key gets anonymized data only: anonymize=false is not allowed "
                "(use true or day)."
            )
        return asked


NO_LIMITS = KeyLimits()
