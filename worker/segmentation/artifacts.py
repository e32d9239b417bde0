"""Model artifacts on disk: ``<model_dir>/<version>.json`` plus a ``current`` pointer file.

Older versions stay (a new model never deletes one); ``current`` holds the version the worker
should use, replaced atomically (write a temporary file, then ``os.replace``), so a reader sees
the old or the new pointer, never half a file.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from worker.segmentation.errors import ArtifactInvalid, ArtifactNotFound
from worker.segmentation.model import SegmentModel

CURRENT = "current"
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def _check_version(version: str) -> str:
    if not _VERSION.match(version):
        raise ArtifactInvalid(f"{version!r} is not a valid model version (letters, digits, ._+-)")
    return version


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class FileModelStore:
    """Versioned model files in one directory."""

    def __init__(self, model_dir: str | Path) -> None:
        self.model_dir = Path(model_dir)

    def path(self, version: str) -> Path:
        return self.model_dir / f"{_check_version(version)}.json"

    def save(self, model: SegmentModel, make_current: bool = True) -> Path:
        """Write the artifact (refusing to overwrite a different one), then the pointer."""
        path = self.path(model.version)
        text = model.to_json()
        if path.exists() and path.read_text(encoding="utf-8") != text:
            raise ArtifactInvalid(f"{path} already holds a different model with this version")
        _atomic_write(path, text)
        if make_current:
            _atomic_write(self.model_dir / CURRENT, model.version + "\n")
        return path

    def current_version(self) -> str | None:
        try:
            text = (self.model_dir / CURRENT).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return text or None

    def versions(self) -> list[str]:
        """Every stored version, oldest first (versions start with their UTC creation time)."""
        if not self.model_dir.is_dir():
            return []
        return sorted(p.stem for p in self.model_dir.glob("*.json"))

    def load(self, version: str | None = None) -> SegmentModel:
        """The model ``version``, or the current one."""
        if version is None:
            version = self.current_version()
            if version is None:
                raise ArtifactNotFound(
                    f"no current model in {self.model_dir} (run `segstream train` first)"
                )
        path = self.path(version)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ArtifactNotFound(f"no model {version} in {self.model_dir}") from None
        return SegmentModel.from_json(text, source=str(path))
