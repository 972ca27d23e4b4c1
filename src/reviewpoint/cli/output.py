"""Where a CLI export's bytes go: a file that appears only once whole, or stdout.

A file is written under a hidden temporary name beside the target and renamed
over it only after the last byte is on disk (fsync, then `os.replace`, which is
atomic on POSIX): a reader or a backup job never sees a half-written export
under the real name, and a failure leaves the previous file, if any, as it was.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO, Protocol


class Output(Protocol):
    """What the export command writes through, whatever the destination."""

    name: str

    def write(self, data: bytes) -> None: ...

    def commit(self) -> None: ...

    def discard(self) -> None: ...


class AtomicFile:
    """`target`, written under a temporary name and renamed into place by `commit`.

    The file is created readable by its owner only (mkstemp's 0600): an export
    holds personal data. `discard` removes the temporary file unless `commit`
    renamed it; it is safe to call in any state, any number of times.
    """

    def __init__(self, target: Path) -> None:
        self.target = target
        self.name = str(target)
        try:
            descriptor, temporary = tempfile.mkstemp(
                dir=target.parent, prefix=f".{target.name}.", suffix=".part"
            )
        except OSError as error:
            raise _naming(error, self.name) from None
        self.temporary = Path(temporary)
        self._file: BinaryIO = os.fdopen(descriptor, "wb")
        self._committed = False

    def write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as error:
            raise _naming(error, self.name) from None

    def commit(self) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self.temporary, self.target)
        except OSError as error:
            raise _naming(error, self.name) from None
        self._committed = True
        _sync_directory(self.target.parent)

    def discard(self) -> None:
        if self._committed:
            return
        self._file.close()
        self.temporary.unlink(missing_ok=True)


class StandardOutput:
    """`-o -`: bytes go out as they come; a failure cannot take back what was written."""

    name = "<stdout>"

    def write(self, data: bytes) -> None:
        sys.stdout.buffer.write(data)

    def commit(self) -> None:
        sys.stdout.buffer.flush()

    def discard(self) -> None:
        pass


def replace_atomically(target: Path, data: bytes) -> None:
    """Write a small file (a cursor) so that it is always either the old or the new one."""
    file = AtomicFile(target)
    try:
        file.write(data)
        file.commit()
    finally:
        file.discard()


def _naming(error: OSError, name: str) -> OSError:
    """The same error, naming the file the operator gave (not the temporary one):
    `one_line_errors` prints an OSError with a file name as it is."""
    return type(error)(error.errno, error.strerror, name)


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable; best effort (not every file system allows it)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
