"""Folders on a local disk or on storage (s3://, gs://, file://, read through pyarrow): the few
file operations s9tune needs on both, and one line for whatever the storage reports.

A URI may carry pyarrow's options after `?` (`s3://bucket/prefix?endpoint_override=host:port&scheme=http`);
a folder keeps them for every path below it.
"""

from __future__ import annotations

import errno
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s9tune.errors import S9Error
from s9tune.fileio import LINKED, LinkRefusedError, list_inside, read_inside, write_inside

logger = logging.getLogger(__name__)

# pyarrow.fs is imported where a folder is first touched, not here: it takes ~160 ms (measured
# with `python -X importtime -c "import s9tune.cli"`), and the CLI imports this module for
# `--help` and every one-line error, which must stay fast


class StorageError(S9Error):
    """The storage cannot be used: a missing bucket, refused credentials, no permission."""


def is_uri(location: str) -> bool:
    return "://" in str(location)


def storage_error(where: str, exc: BaseException) -> StorageError:
    """One line for what pyarrow (S3, GCS, local) reports, with what to do about it."""
    text = str(exc)
    if "NO_SUCH_BUCKET" in text or "NoSuchBucket" in text or ("Bucket" in text and "not found" in text):
        bucket = where.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0]
        return StorageError(
            f"{where}: the bucket {bucket!r} does not exist; create it first (e.g. aws s3 mb s3://{bucket})"
        )
    if any(
        k in text
        for k in (
            "ACCESS_DENIED",
            "SIGNATURE_DOES_NOT_MATCH",
            "INVALID_ACCESS_KEY",
            "InvalidAccessKeyId",
            "AccessDenied",
            "Forbidden",
            "403",
            "Permission denied",
            "UNAUTHENTICATED",
        )
    ):
        return StorageError(
            f"{where}: access denied; check the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or ~/.aws; "
            "GOOGLE_APPLICATION_CREDENTIALS for gs://) and, for an S3-compatible server, AWS_ENDPOINT_URL"
        )
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return StorageError(f"{where}: cannot use this storage ({first[:200]})")


def _size(n: int) -> str:
    return f"{n // 2**20:,} MiB" if n >= 2**20 else f"{n // 1024:,} KiB"


def _copy(src: str, dst: str, src_fs: Any, dst_fs: Any) -> None:
    import pyarrow.fs

    # pyarrow's threaded upload to S3 can corrupt or hang (apache/arrow#32372); Ray Train avoids it the same way
    threads = not isinstance(dst_fs, pyarrow.fs.S3FileSystem)
    pyarrow.fs.copy_files(
        src, dst, source_filesystem=src_fs, destination_filesystem=dst_fs, use_threads=threads, chunk_size=64 << 20
    )


@dataclass(frozen=True)
class Folder:
    """A folder: an absolute local path, or a URI (without its `?options`, kept in `query`)."""

    base: str
    query: str = ""

    @classmethod
    def parse(cls, location: str | Path) -> Folder:
        base, _, query = str(location).partition("?")
        base = base.rstrip("/")
        if not is_uri(base):
            base = str(Path(base).expanduser().resolve())
        return cls(base, query)

    @property
    def url(self) -> str:
        return self.base + (f"?{self.query}" if self.query else "")

    @property
    def is_local(self) -> bool:
        return not is_uri(self.base)

    @property
    def name(self) -> str:
        return self.base.rsplit("/", 1)[-1]

    @property
    def parent(self) -> Folder:
        return Folder(self.base.rsplit("/", 1)[0], self.query)

    def child(self, relpath: str) -> Folder:
        return Folder(f"{self.base}/{relpath.strip('/')}", self.query)

    def contains(self, other: Folder) -> bool:
        """Whether `other` is this folder or lies below it."""
        return other.base == self.base or other.base.startswith(self.base + "/")

    def __str__(self) -> str:
        return self.url

    def fs(self) -> tuple[Any, str]:
        """(pyarrow filesystem, path on it)."""
        import pyarrow.fs

        if self.is_local:
            return pyarrow.fs.LocalFileSystem(), self.base
        try:
            fs, path = pyarrow.fs.FileSystem.from_uri(self.url)
        except (OSError, ValueError) as exc:
            raise storage_error(self.url, exc) from None
        return fs, path.rstrip("/")

    def exists(self, relpath: str = "") -> bool:
        import pyarrow.fs

        fs, root = self.fs()
        try:
            return fs.get_file_info(f"{root}/{relpath}" if relpath else root).type != pyarrow.fs.FileType.NotFound
        except OSError as exc:
            raise storage_error(self.url, exc) from None

    def files(self) -> list[str]:
        """Every file below the folder, as paths relative to it (none if it does not exist)."""
        import pyarrow.fs

        fs, root = self.fs()
        try:
            infos = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True, allow_not_found=True))
        except OSError as exc:
            raise storage_error(self.url, exc) from None
        return sorted(i.path[len(root) + 1 :] for i in infos if i.type == pyarrow.fs.FileType.File)

    def check_writable(self) -> None:
        """A missing bucket, refused credentials or a read-only folder as one line, before any
        work: a URI gets a probe object written and removed beside the folder; a local path is
        checked without creating anything."""
        if self.is_local:
            folder = Path(self.base)
            while not folder.exists():
                folder = folder.parent
            if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
                raise StorageError(f"{self.base}: cannot write there ({folder} is not a writable folder)")
            return
        fs, root = self.fs()
        probe = f"{root.rsplit('/', 1)[0]}/.s9tune-probe-{uuid.uuid4().hex}"
        try:
            with fs.open_output_stream(probe) as fh:
                fh.write(b"probe")
            fs.delete_file(probe)
        except OSError as exc:
            raise storage_error(self.url, exc) from None

    def delete(self) -> None:
        fs, root = self.fs()
        try:
            fs.delete_dir(root)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise storage_error(self.url, exc) from None

    def write_text(self, relpath: str, text: str) -> None:
        """Write a file below the folder, atomically. Locally never through a symbolic link
        (fileio.write_inside): the folder may be someone else's experiment, and pyarrow's
        output stream follows links."""
        if self.is_local:
            try:
                Path(self.base).mkdir(parents=True, exist_ok=True)
                write_inside(Path(self.base), relpath, text.encode("utf-8"))
            except OSError as exc:
                raise StorageError(f"{self.base}/{relpath}: cannot write ({exc.strerror or exc})") from None
            return
        fs, root = self.fs()
        path = f"{root}/{relpath}"
        try:
            fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
            with fs.open_output_stream(path) as fh:
                fh.write(text.encode("utf-8"))
        except OSError as exc:
            raise storage_error(self.url, exc) from None

    def listing(self, *, dirs: bool) -> list[str] | None:
        """The names of the folders (`dirs`) or files directly inside, sorted; None if the folder
        does not exist. Locally a symbolic link is neither (fileio.list_inside)."""
        import pyarrow.fs

        if self.is_local:
            try:
                return list_inside(Path(self.base), dirs=dirs)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise storage_error(self.url, exc) from None
        fs, root = self.fs()
        try:
            infos = fs.get_file_info(pyarrow.fs.FileSelector(root))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise storage_error(self.url, exc) from None
        want = pyarrow.fs.FileType.Directory if dirs else pyarrow.fs.FileType.File
        return sorted(i.base_name for i in infos if i.type == want)

    def read_bytes(self, relpath: str, limit: int) -> bytes | None:
        """The file's bytes, or None if it does not exist; a file over `limit` bytes is refused.
        Locally a symbolic link is not followed (the folder may be someone else's)."""
        try:
            if self.is_local:
                raw = read_inside(Path(self.base), relpath, limit)
            else:
                fs, root = self.fs()
                with fs.open_input_stream(f"{root}/{relpath}") as fh:
                    raw = fh.read(limit + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise LinkRefusedError(f"{self.url}/{exc.filename}: {LINKED}") from None
            raise storage_error(self.url, exc) from None
        if len(raw) > limit:
            raise StorageError(f"{self.url}/{relpath}: larger than {_size(limit)}; not a file s9tune or Tune wrote")
        return raw

    def read_text(self, relpath: str, limit: int) -> str | None:
        """`read_bytes` as UTF-8 text."""
        raw = self.read_bytes(relpath, limit)
        if raw is None:
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise StorageError(f"{self.url}/{relpath}: not UTF-8 text; not a file s9tune or Tune wrote") from None

    def download(self, dest: Path, relpath: str = "") -> None:
        """Copy the folder (or one file below it) to the local `dest`."""
        import pyarrow.fs

        fs, root = self.fs()
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            _copy(f"{root}/{relpath}" if relpath else root, str(dest), fs, pyarrow.fs.LocalFileSystem())
        except OSError as exc:
            raise storage_error(self.url, exc) from None

    def upload(self, src: Path) -> None:
        """Copy the local folder `src` into this one (files of the same name are replaced)."""
        import pyarrow.fs

        fs, root = self.fs()
        try:
            fs.create_dir(root, recursive=True)
            _copy(str(src), root, pyarrow.fs.LocalFileSystem(), fs)
        except OSError as exc:
            raise storage_error(self.url, exc) from None
