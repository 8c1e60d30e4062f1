"""Write files under a temporary name in the same folder, then rename: a crash never leaves half a file.

Temporary names are `.<final name>.pid<PID>.<random>.tmp<suffix>`: hidden, never matching an output pattern, and
carrying the writer's process id so that `remove_stale_temporaries` can drop those of a killed run (SIGKILL skips
every cleanup) without touching those of a writer that is still alive."""
from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

logger = logging.getLogger(__name__)

TEMP_RE = re.compile(r"^\..+\.pid(\d+)\.[^.]+\.tmp")


@contextmanager
def atomic_path(final: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `final`; rename it to `final` only if the block succeeds.

    `suffix` keeps the extension writers look at (e.g. '.nii.gz', '.npz'). An OSError in the block (disk full,
    quota, I/O error) is re-raised naming `final`, since the temporary name means nothing to a user."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.pid{os.getpid()}.", suffix=".tmp" + suffix, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; results should be readable like any file
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except OSError as e:
        if getattr(e, "names_final_file", False):  # already named by a nested atomic_path (several files at once)
            raise
        if e.errno is None:
            named = OSError(f"{final}: write failed ({e})")
        else:
            named = OSError(e.errno, f"{e.strerror or e} (while writing)", str(final))  # keeps the subclass
        named.names_final_file = True
        raise named from e
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike, recursive: bool = True) -> int:
    """Delete temporary files of atomic writes whose writer process is gone; return how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for p in (folder.rglob(".*") if recursive else folder.glob(".*")):
        m = TEMP_RE.match(p.name)
        if m and p.is_file() and not _alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed += 1
    if removed:
        logger.info("removed %d temporary file(s) left by an interrupted run in %s", removed, folder)
    return removed


def check_writable_folder(folder: str | os.PathLike) -> Path:
    """Create `folder` if needed and prove a file can be written there; InputError naming it otherwise."""
    from itermask_auto.imageio.errors import InputError
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, "output folder is an existing file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".write_probe.pid{os.getpid()}.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(folder, f"output folder cannot be written ({e.strerror or e})") from None
    return folder


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path, ".json") as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)
