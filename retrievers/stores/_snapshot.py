"""Atomic, checksummed snapshot folders shared by the stores and BM25.

Layout of a snapshot folder ``root``::

    root/CURRENT          "gen-000007"  (switched with os.replace: the commit point)
    root/gen-000007/      the files a store wrote, plus manifest.json (sizes, sha256)

:func:`write_snapshot` fills a temporary folder, fsyncs it, renames it to the next
generation and only then flips ``CURRENT``; a crash at any step leaves the previous
generation readable. :func:`read_snapshot` verifies the manifest and raises
:class:`IndexCorruptError` naming the first bad file. Reading never writes.

This module does not know what the files mean; the stores do.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from ragloom.errors import ConfigError, IndexCorruptError, RetrievalError

__all__ = ["read_snapshot", "write_snapshot"]

CURRENT = "CURRENT"
MANIFEST = "manifest.json"
_GEN = re.compile(r"^gen-(\d{6,})$")


def write_snapshot(
    root: str | Path, write: Callable[[Path], None], *, kind: str, checksums: bool = True
) -> Path:
    """Call ``write(folder)`` into a fresh folder and commit it as ``root``'s new generation.

    Args:
        root: the snapshot folder (created if missing; refused if it holds other files).
        write: writes the store's files into the folder it is given.
        kind: a label saved in the manifest and checked by :func:`read_snapshot`.
        checksums: record sha256 of every file (off for folders a live database keeps writing).

    Returns:
        The committed generation folder.
    """
    root = Path(root)
    _check_root(root)
    root.mkdir(parents=True, exist_ok=True)
    gen = f"gen-{_last_generation(root) + 1:06d}"
    tmp = root / f".tmp-{gen}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write(tmp)
        _write_manifest(tmp, kind, checksums)
        _fsync_tree(tmp)
        os.replace(tmp, root / gen)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _atomic_write_text(root / CURRENT, gen + "\n")
    _remove_old(root, keep=gen)
    return root / gen


def read_snapshot(root: str | Path, *, kind: str) -> Path:
    """Return ``root``'s current generation folder after verifying its manifest.

    Raises:
        RetrievalError: nothing is saved at ``root``.
        IndexCorruptError: ``CURRENT``, the manifest or a file is missing, truncated or altered.
    """
    root = Path(root)
    if not root.exists():
        raise RetrievalError(f"no saved index at {root}")
    pointer = root / CURRENT
    if not pointer.is_file():
        raise IndexCorruptError(
            f"{pointer} is missing: {root} is not a ragloom index, or its first save never finished"
        )
    gen = pointer.read_text(errors="replace").strip()
    folder = root / gen
    if not _GEN.match(gen) or not folder.is_dir():
        raise IndexCorruptError(f"{pointer} names {gen!r}, which is not a saved generation")
    manifest = _read_manifest(folder / MANIFEST)
    if manifest.get("kind") != kind:
        raise IndexCorruptError(
            f"{folder / MANIFEST}: this is a {manifest.get('kind')!r} index, not {kind!r}"
        )
    for name, (size, digest) in manifest.get("files", {}).items():
        _verify_file(folder / name, size, digest)
    return folder


def _check_root(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise ConfigError(f"cannot save an index to {root}: it is a file, not a folder")
    if root.is_dir() and any(root.iterdir()) and not (root / CURRENT).exists():
        raise ConfigError(
            f"refusing to save an index into {root}: the folder holds other files; "
            "pick an empty or new folder"
        )


def _last_generation(root: Path) -> int:
    numbers = [int(m.group(1)) for p in root.iterdir() if (m := _GEN.match(p.name))]
    return max(numbers, default=0)


def _write_manifest(folder: Path, kind: str, checksums: bool) -> None:
    files: dict[str, tuple[int, str]] = {}
    if checksums:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            files[path.relative_to(folder).as_posix()] = (path.stat().st_size, _sha256(path))
    (folder / MANIFEST).write_text(json.dumps({"format": 1, "kind": kind, "files": files}))


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexCorruptError(f"{path} cannot be read ({exc}); nothing was overwritten") from exc
    if not isinstance(manifest, dict):
        raise IndexCorruptError(f"{path} is not a manifest object")
    return manifest


def _verify_file(path: Path, size: int, digest: str) -> None:
    if not path.is_file():
        raise IndexCorruptError(f"{path} is missing from the saved index")
    actual = path.stat().st_size
    if actual != size or _sha256(path) != digest:
        raise IndexCorruptError(
            f"{path} is corrupt or truncated ({actual} bytes, expected {size}, checksum "
            "mismatch); nothing was overwritten: restore the file or rebuild the index"
        )


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _fsync_tree(folder: Path) -> None:
    for path in [*folder.rglob("*"), folder]:
        _fsync(path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync(path.parent)


def _remove_old(root: Path, *, keep: str) -> None:
    for path in root.iterdir():
        stale = _GEN.match(path.name) or path.name.startswith(".tmp-gen-")
        if stale and path.name != keep:
            shutil.rmtree(path, ignore_errors=True)
