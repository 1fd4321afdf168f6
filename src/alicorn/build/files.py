"""Adding the recipe's files and directories to the root filesystem."""

from __future__ import annotations

import os
from pathlib import Path

from alicorn.errors import ComposeError
from alicorn.fs import resolve_in_root
from alicorn.recipe import Recipe


def add_files(recipe: Recipe, rootfs: Path) -> list[str]:
    """Write every ``files`` entry into ``rootfs``; returns the paths written."""
    written = []
    for spec in recipe.files:
        dest = resolve_in_root(rootfs, spec.path, follow_last=False)
        if dest.is_symlink():
            dest.unlink()
        try:
            if spec.directory:
                dest.mkdir(parents=True, exist_ok=True)
                os.chmod(dest, spec.mode if spec.mode is not None else 0o755)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                if spec.content is not None:
                    data = spec.content.encode()
                else:
                    assert spec.source is not None
                    data = recipe.resolve(spec.source).read_bytes()
                if dest.is_dir():
                    raise ComposeError(f"files: {spec.path} is a directory in the image; "
                                       "cannot write a file there")
                tmp = dest.with_name(f".{dest.name}.alicorn")
                tmp.write_bytes(data)
                os.chmod(tmp, spec.mode if spec.mode is not None else 0o644)
                os.replace(tmp, dest)
            os.lchown(dest, *spec.owner)
            if spec.mode is not None and spec.mode & 0o6000:
                os.chmod(dest, spec.mode)  # chown(2) cleared the setuid and setgid bits
        except OSError as e:
            raise ComposeError(f"files: cannot write {spec.path}: {e.strerror}",
                               where=recipe.file) from e
        written.append(spec.path)
    return written
