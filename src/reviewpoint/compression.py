"""gzip for clients that ask for it (`Accept-Encoding: gzip`), streamed exports included.

Starlette's `GZipMiddleware` compresses each body message as it passes and
ends it with a sync flush (from Starlette 1.5; pinned in pyproject.toml), so
a streamed export stays streamed: every 64 KiB piece the export sends reaches
the client as soon as it is compressed, and a client can decompress what it
has so far. An export cut off mid-stream never sends the gzip trailer, so a
cut download fails to decompress instead of looking complete.

Level 1: on the seeded 1,000,000-user full export it compresses about 10x,
while higher levels cost up to twice the CPU for a few percent more (measured
figures in README "Compression"); an export must stay within 1.5x of its
uncompressed time.

Every response of at least `MINIMUM_SIZE` bytes is compressed, JSON included:
credentials travel in headers, never in cookies, so a third-party page cannot
make an authenticated request and watch the compressed size (BREACH).
"""

from __future__ import annotations

from starlette.middleware.gzip import DEFAULT_EXCLUDED_CONTENT_TYPES

LEVEL = 1
# Below this, gzip's own header and trailer (18 bytes) and the CPU are not
# worth it: a login token, an error, a short page of users.
MINIMUM_SIZE = 1024
# A workbook is already a zip archive (the xlsx export format).
EXCLUDED_CONTENT_TYPES = (
    *DEFAULT_EXCLUDED_CONTENT_TYPES,
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
)
