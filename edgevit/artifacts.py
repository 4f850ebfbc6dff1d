"""Writing outputs: atomically (a failed run leaves no half-written file) with a report beside them.

Every command that produces something writes `<output stem>.<command>.json` (machine-readable) and
`<output stem>.<command>.md` (a short summary for humans) next to its output.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import errno
import json
import os
import platform
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from . import __version__
from .errors import EdgevitError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_prefix(final: Path) -> str:
    """`.<name>.<pid>.`: the pid lets a later run tell a dead run's leftovers from a live run's work."""
    return f".{final.name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


STALE_AGE = 3600.0  # seconds; a leftover without a readable pid is removed once this old


def sweep_stale(final: Path) -> list[Path]:
    """Remove the temporary `.part` files/folders a killed run (SIGKILL, power loss) left beside `final`.

    A leftover is stale when the pid in its name is dead (or, for names without a pid, when it is older
    than STALE_AGE). A `.old` folder holding `previous` is a replaced output whose swap was interrupted:
    when `final` is missing it is moved back into place, else removed. Returns what was cleaned.
    """
    final = Path(final)
    parent = final.parent
    if not parent.is_dir():
        return []
    # mkstemp/mkdtemp names: .<name>.<pid>.<8 random [a-z0-9_]>.part (older edgevit: no pid)
    pattern = re.compile(rf"^\.{re.escape(final.name)}\.(?:(\d+)\.)?[a-z0-9_]{{8}}\.(part|old)$")
    cleaned = []
    for entry in parent.iterdir():
        m = pattern.match(entry.name)
        if not m:
            continue
        pid = int(m.group(1)) if m.group(1) else None
        try:
            if pid is not None:
                if pid == os.getpid() or _pid_alive(pid):
                    continue
            elif time.time() - entry.lstat().st_mtime < STALE_AGE:
                continue
            previous = entry / "previous"
            if m.group(2) == "old" and previous.exists() and not final.exists():
                os.replace(previous, final)  # an interrupted swap: the earlier output comes back
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            cleaned.append(entry)
        except OSError:
            continue
    return cleaned


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; move it into place only if the block succeeds."""
    final = Path(final)
    if final.is_dir():
        raise EdgevitError(f"{final} is a folder; give a file name for the output")
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(final)
    fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(final), suffix=".part", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    AT_FDCWD = -100
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; it replaces `final` only if the block succeeds.

    On failure (or Ctrl-C) the temporary folder is removed and a previous `final` is left as it was. The
    replacement is one atomic swap (renameat2 RENAME_EXCHANGE) where the filesystem offers it, so even
    SIGKILL at any instant leaves either the old or the new folder in place; a SIGKILLed run's temporary
    folder is removed by the next run writing the same output (`sweep_stale`).
    """
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise EdgevitError(f"{final} exists and is not a folder; give a folder name for the output")
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(final)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(final), suffix=".part", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield tmp
        if final.exists():
            if not _exchange(tmp, final):  # fallback: two renames, repaired by sweep_stale if cut between
                old = Path(tempfile.mkdtemp(prefix=_temp_prefix(final), suffix=".old", dir=final.parent))
                os.replace(final, old / "previous")
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _is_edgevit_output(folder: Path) -> bool:
    """Does `folder` hold an edgevit report (`<stem>.<command>.json` written by write_report)?"""
    for f in folder.glob("*.json"):
        try:
            with open(f, "rb") as fh:
                head = fh.read(512)
        except OSError:
            continue
        if b'"edgevit_version"' in head:
            return True
    return False


def check_output_dir(final: Path, option: str = "-o") -> None:
    """Refuse an output folder whose replacement would destroy something that is not an earlier output.

    `atomic_dir` replaces the whole folder, so `-o ~` or `-o src/` must fail before any work, not after.
    An empty folder, a missing one or an earlier edgevit output (it holds a report) is fine.
    """
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise EdgevitError(f"{option} {final}: exists and is a file; give a folder name for the output")
    if not final.exists():
        return
    resolved, cwd = final.resolve(), Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise EdgevitError(f"{option} {final}: is the current folder or one of its parents; the output folder "
                           "is replaced as a whole, give a new or earlier-output folder")
    if any(final.iterdir()) and not _is_edgevit_output(final):
        raise EdgevitError(f"{option} {final}: folder exists and holds files that are not an earlier edgevit "
                           "output (the output folder is replaced as a whole); give a new or empty folder")


def normalize_mlpackage(package: Path) -> None:
    """Make a saved `.mlpackage` byte-reproducible.

    coremltools (9.0) writes random UUIDs as item identifiers in Manifest.json and serializes the spec's
    protobuf maps (metadata `userDefined`, MIL attributes) in hash order. The identifiers become UUIDv5s
    of the item paths and the spec is re-serialized deterministically (same message, sorted map keys).
    """
    package = Path(package)
    manifest_path = package / "Manifest.json"
    manifest = json.loads(manifest_path.read_text())
    mapping = {}
    for old_id, item in manifest.get("itemInfoEntries", {}).items():
        mapping[old_id] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"edgevit:{item.get('path', '')}:{item.get('name', '')}"))
    manifest["itemInfoEntries"] = {mapping[k]: v for k, v in manifest.get("itemInfoEntries", {}).items()}
    if manifest.get("rootModelIdentifier") in mapping:
        manifest["rootModelIdentifier"] = mapping[manifest["rootModelIdentifier"]]
    write_text_atomic(manifest_path, json.dumps(manifest, indent=4, sort_keys=True) + "\n")
    spec_path = package / "Data" / "com.apple.CoreML" / "model.mlmodel"
    if spec_path.is_file():
        from coremltools.proto import Model_pb2

        spec = Model_pb2.Model()
        spec.ParseFromString(spec_path.read_bytes())
        with atomic_path(spec_path) as tmp:
            tmp.write_bytes(spec.SerializeToString(deterministic=True))


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def _created() -> str:
    """Now (UTC), or $SOURCE_DATE_EPOCH for reproducible builds (https://reproducible-builds.org/specs/)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    when = (datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc) if epoch.isdigit()
            else datetime.datetime.now(datetime.timezone.utc))
    return when.isoformat(timespec="seconds")


def report_paths(output: Path, command: str) -> tuple[Path, Path]:
    output = Path(output)
    stem = output.name[: -len(output.suffix)] if output.suffix else output.name
    return output.parent / f"{stem}.{command}.json", output.parent / f"{stem}.{command}.md"


def write_report(output: Path, command: str, payload: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write the JSON report and the Markdown summary for `command` next to `output`."""
    json_path, md_path = report_paths(output, command)
    doc = {
        "command": command,
        "edgevit_version": __version__,
        "created": _created(),
        "host": platform.machine(),
        **payload,
    }
    write_text_atomic(json_path, json.dumps(doc, indent=2, default=_jsonable) + "\n")
    write_text_atomic(md_path, markdown.rstrip() + "\n")
    return json_path, md_path


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
