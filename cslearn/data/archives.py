"""Safe extraction of tar and zip archives: nothing may land outside the target folder.

Members with absolute paths, `..` components, or links (symbolic or hard) that point outside the
target are refused, and the whole archive is rejected before anything is written.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Optional

from .errors import DatasetError


class UnsafeArchiveError(DatasetError):
    """An archive member would be written outside the extraction folder (``..``, absolute path, link)."""


def _unsafe_name(name: str) -> Optional[str]:
    """Why a member name may not be extracted (absolute, drive letter, ``..``), or None."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        return "is an absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "contains '..'"
    return None


def _outside(relative: str, target: str) -> bool:
    resolved = os.path.normpath(os.path.join(target, relative))
    return resolved != target and not resolved.startswith(target + os.sep)


def _tar_problems(archive: tarfile.TarFile, target: str) -> list[str]:
    """One message per member that would land outside ``target`` or be written through a link."""
    problems, links = [], set()
    for member in archive.getmembers():
        name = member.name.rstrip("/")
        reason = _unsafe_name(member.name)
        if reason is None and member.issym():
            pointed = os.path.join(os.path.dirname(name), member.linkname)  # relative to the link's folder
            if member.linkname.startswith("/") or _outside(pointed, target):
                reason = f"is a symlink to {member.linkname!r}, outside the target folder"
        elif reason is None and member.islnk():
            if member.linkname.startswith("/") or _outside(member.linkname, target):
                reason = f"is a hard link to {member.linkname!r}, outside the target folder"
        elif reason is None and (member.isdev() or member.isfifo()):
            reason = "is a device or pipe"
        if reason is None and any(parent in links for parent in PurePosixPath(name).parents):
            reason = "is written through a symlink of the archive"
        if member.issym():
            links.add(PurePosixPath(os.path.normpath(name)))
        if reason:
            problems.append(f"{member.name!r} {reason}")
    return problems


def safe_extract(archive: str | Path, target: str | Path) -> Path:
    """Extract a tar or zip archive into ``target``, refusing it whole if any member would escape.

    Refused: absolute paths, ``..`` components, symlinks and hard links pointing outside ``target``,
    members written through a symlink, device files. Nothing is written when a member is refused.
    """
    archive, target = Path(archive), Path(target).resolve()
    base = str(target)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as bundle:
            problems = [f"{name!r} {reason}" for name in bundle.namelist() if (reason := _unsafe_name(name))]
            if not problems:
                target.mkdir(parents=True, exist_ok=True)
                bundle.extractall(target)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as bundle:
            problems = _tar_problems(bundle, base)
            if not problems:
                target.mkdir(parents=True, exist_ok=True)
                extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # checks again when available
                bundle.extractall(target, **extra)
    else:
        raise DatasetError(f"{archive} is neither a tar nor a zip archive; delete it and download it again")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise UnsafeArchiveError(f"refusing to extract {archive}: {shown}. The archive is damaged or not the "
                                 "published file; delete it and download it again.")
    return target


def archive_problem(path: str | Path) -> Optional[str]:
    """None for a zip or tar archive, else what the file is not (a `download_file` ``validate``)."""
    if zipfile.is_zipfile(path) or tarfile.is_tarfile(path):
        return None
    return "is neither a zip nor a tar archive (an error page?)"
