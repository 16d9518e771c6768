"""Download, verify, extract and check VOC-aug, ADE20K and MiB's per-step index files.

``python -m cslearn data download voc|ade|mib-index --root DIR`` calls `download_dataset`, which:
1. fetches every archive of the dataset into ``<root>/downloads/`` with `download_file`: mirrors in
   order, resumable (HTTP Range into ``<file>.part``), size and checksum verified;
2. unpacks each with `safe_extract` (refuses members that would land outside the target folder);
3. arranges the layout that MiB's ``data/download_voc.sh`` / ``download_ade.sh`` produce (the MiB
   protocol, "Datasets on disk"): ``VOCdevkit/VOC2012/*`` -> ``PascalVOC12/``, ``list/`` ->
   ``PascalVOC12/splits/``; ``ADEChallengeData2016/`` as it is;
4. runs `cslearn.data.check.check_dataset`, the same validation as ``data check``.
Finished steps leave marker files in ``<root>/downloads/``, so a rerun skips them. When every mirror
fails, `DownloadError` says which file to fetch by hand from where, and where to put it.

The files, their mirrors, sizes and checksums are listed in `cslearn.data.catalogue`; single-file
HTTP downloads live in `cslearn.data.fetch` and archive extraction in `cslearn.data.archives`. This
module re-exports their names (``from cslearn.data.download import download_file`` keeps working).

Checksums: a ``checksum`` of None means no checksum is known for certain. The size is still checked
when known, and the md5 and sha256 of what arrived are returned for the user to compare.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Optional

from tqdm.auto import tqdm

from .archives import UnsafeArchiveError, archive_problem, safe_extract  # noqa: F401 (UnsafeArchiveError re-exported)
from .catalogue import (ADE_ZIP, DATASETS, DOWNLOAD_DIR, MIB_INDEX_FILES, MIB_INDEX_STEPS,  # noqa: F401 (re-exported)
                        MIB_REPOSITORY_MIRRORS, VOC_LISTS, VOC_MASKS, VOC_TRAINVAL, RemoteFile)
from .check import STANDARD_SIZES, check_dataset, format_report
from .errors import DatasetError
from .fetch import (CHUNK_BYTES, MAX_STALLS, USER_AGENT, DownloadError, download_file,  # noqa: F401 (re-exported)
                    file_digests, verify_file)
from .mib_index import load_mib_index


# ---------------------------------------------------------------- extraction

def _locate(staging: Path, inner: str, archive_name: str) -> Path:
    """The folder ``inner`` of an extracted archive (also when the archive wraps it in another folder)."""
    if (staging / inner).is_dir():
        return staging / inner
    found = sorted((path for path in staging.rglob(PurePosixPath(inner).name)
                    if path.is_dir() and path.as_posix().endswith(inner) and "__MACOSX" not in path.parts),
                   key=lambda path: len(path.parts))
    if not found:
        raise DatasetError(f"{archive_name} holds no folder {inner}/: it is not the expected archive; "
                           f"delete it from {staging.parent.parent} and download it again")
    return found[0]


def _merge_move(source: Path, destination: Path) -> None:
    """Move ``source`` to ``destination``, merging into existing folders (so an interrupted move resumes)."""
    if not destination.exists():
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, destination)
    elif source.is_dir() and destination.is_dir():
        for child in list(source.iterdir()):
            _merge_move(child, destination / child.name)
        source.rmdir()
    else:
        if destination.is_dir():
            shutil.rmtree(destination)
        os.replace(source, destination)


# ---------------------------------------------------------------- datasets

def _urls(remote: RemoteFile, mirrors: Optional[Sequence[str]]) -> list[str]:
    """The built-in mirrors, or ``<base>/<name>`` for each given mirror base URL."""
    return list(remote.urls) if mirrors is None else [base.rstrip("/") + "/" + remote.name for base in mirrors]


def download_dataset(name: str, root: str | Path, mirrors: Optional[Sequence[str]] = None, progress: bool = True,
                     *, keep_archives: bool = False, check: bool = True, timeout: float = 60.0,
                     log: Optional[Callable[[str], None]] = None) -> dict:
    """Download, verify, extract and arrange ``name`` ("voc", "ade" or "mib-index") under ``root``.

    ``mirrors`` replaces the built-in mirrors by base URLs (the file name is appended). Returns
    ``{"dataset", "root", "files": [per-file dicts], "steps", "notes", "problems", "check"}``;
    "check" is `check_dataset`'s report (None for mib-index or ``check=False``).
    """
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {name!r}")
    root = Path(root)
    result = {"dataset": name, "root": str(root), "files": [], "steps": [], "notes": [], "problems": [], "check": None}
    if name == "mib-index":
        return _download_mib_index(root, mirrors, progress, timeout, log, result)
    downloads = root / DOWNLOAD_DIR
    marker = lambda remote, step: downloads / f".{remote.name}.{step}"  # noqa: E731
    pending = [remote for remote in DATASETS[name] if not marker(remote, "arranged").exists()]
    result["steps"] += [f"{remote.name}: already in place" for remote in DATASETS[name] if remote not in pending]
    failures: list[DownloadError] = []
    for remote in pending:  # every download first: a dead mirror shows up before any long extraction
        try:
            record = download_file(_urls(remote, mirrors), downloads / remote.name, remote.checksum, remote.size,
                                   progress, timeout=timeout, validate=archive_problem, log=log)
            result["files"].append({"name": remote.name, **record})
        except DownloadError as error:
            usual = f"\nIts usual sources: {', '.join(remote.urls)}" if mirrors is not None else ""
            failures.append(DownloadError(f"{error}{usual}", error.failures))
    if failures:
        raise DownloadError("\n\n".join(str(error) for error in failures),
                            [failure for error in failures for failure in error.failures])
    for remote in pending:
        staging = downloads / "extracted" / remote.name
        if not (marker(remote, "extracted").exists() and staging.is_dir()):
            safe_extract(downloads / remote.name, staging)
            marker(remote, "extracted").touch()
        inner, destination = remote.unpack
        try:
            _merge_move(_locate(staging, inner, remote.name), root / destination)
        except DatasetError:
            if not (root / destination).is_dir():
                raise
            # else an interrupted run had moved it already
        marker(remote, "arranged").touch()
        shutil.rmtree(staging, ignore_errors=True)
        if not keep_archives:
            (downloads / remote.name).unlink(missing_ok=True)
        result["steps"].append(f"{remote.name}: extracted, {inner}/ moved to {root / destination}")
    if (downloads / "extracted").is_dir() and not any((downloads / "extracted").iterdir()):
        (downloads / "extracted").rmdir()
    for record in result["files"]:
        if not record["checksum_verified"]:
            result["notes"].append(f"{record['name']}: no published checksum is known; size {record['size']:,} "
                                   f"bytes, md5 {record['md5']}, sha256 {record['sha256']}: compare them with a "
                                   "trusted copy")
    if check:
        result["check"] = check_dataset(name, root)
        result["problems"] = list(result["check"]["problems"])
    return result


def _index_problem(path: Path, num_images: int) -> Optional[str]:
    """None for a valid index file (`load_mib_index`), else why it is not one."""
    try:
        load_mib_index(path, num_images)
    except DatasetError as error:
        return str(error)
    return None


def _download_mib_index(root: Path, mirrors: Optional[Sequence[str]], progress: bool, timeout: float,
                        log: Optional[Callable[[str], None]], result: dict) -> dict:
    """Fetch MiB's index files into ``<root>/mib-index/<dataset>/<task>/``, each validated by `load_mib_index`.

    A file missing on every mirror (404) is noted, not an error: MiB computes such files at run time.
    """
    absent, failures = [], []
    for remote in tqdm(DATASETS["mib-index"], desc="MiB index files", unit="file", disable=not progress):
        num_images = STANDARD_SIZES[remote.name.split("/")[1]]["train"]
        try:
            record = download_file(_urls(remote, mirrors), root / "mib-index" / remote.name.removeprefix("data/"),
                                   progress=False, timeout=timeout, log=log,
                                   validate=lambda path: _index_problem(path, num_images))  # noqa: B023
        except DownloadError as error:
            if error.not_found:
                absent.append(remote.name)
            else:
                failures.append(error)
            continue
        result["files"].append({"name": remote.name, **record})
    if failures or not result["files"]:
        details = "\n\n".join(str(error) for error in failures) or "no index file was found on any mirror"
        raise DownloadError(f"{details}\n\nMiB's index files are the folder data/ of https://github.com/fcdl94/MiB: "
                            f"download that repository and copy data/voc and data/ade into {root / 'mib-index'}",
                            [failure for error in failures for failure in error.failures])
    if absent:
        result["notes"].append(f"{len(absent)} file(s) are not in MiB's repository (404 on every mirror); "
                               f"MiB computes those at run time: {', '.join(absent)}")
    result["notes"].append(f"use them with --index-dir {root / 'mib-index' / 'voc'} (or {root / 'mib-index' / 'ade'})")
    return result


def format_download_report(result: dict) -> str:
    """Human-readable text of a `download_dataset` result (what the command line prints)."""
    lines = [f"{result['dataset']} at {result['root']}"]
    for record in result["files"]:
        where = f"from {record['url']}" if record["url"] else "already downloaded"
        verified = f"{record['checksum']} verified" if record["checksum_verified"] else "no published checksum"
        lines.append(f"  {record['name']}: {record['size']:,} bytes {where} ({verified})")
    lines += [f"  {step}" for step in result["steps"]]
    lines += [f"note: {note}" for note in result["notes"]]
    if result["check"] is not None:
        lines.append(format_report(result["check"]))
    elif result["problems"]:
        lines.append(f"{len(result['problems'])} problem(s):")
        lines += [f"  - {problem}" for problem in result["problems"]]
    return "\n".join(lines)
