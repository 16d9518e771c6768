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

Checksums: a ``checksum`` of None means no checksum is known for certain. The size is still checked
when known, and the md5 and sha256 of what arrived are returned for the user to compare.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional

from tqdm.auto import tqdm

from .archives import UnsafeArchiveError, archive_problem, safe_extract  # noqa: F401 (UnsafeArchiveError re-exported)
from .check import STANDARD_SIZES, check_dataset, format_report
from .errors import DatasetError
from .mib_index import load_mib_index

USER_AGENT = "cslearn-downloader (Python urllib)"
CHUNK_BYTES = 1 << 20
MAX_STALLS = 3  # interrupted attempts in a row without new bytes before a mirror is given up


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch. ``name`` is its path under ``<root>/downloads/`` and under a ``--mirror`` base URL.

    ``unpack`` = (folder inside the archive, its destination under ``<root>``); None for plain files.
    ``size`` / ``checksum`` ("md5:<hex>", "sha1:<hex>" or "sha256:<hex>") are None when not known for certain.
    """
    name: str
    urls: tuple[str, ...]
    size: Optional[int] = None
    checksum: Optional[str] = None
    unpack: Optional[tuple[str, str]] = None


VOC_TRAINVAL = RemoteFile(
    "VOCtrainval_11-May-2012.tar",
    ("http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",   # official, often down
     "https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",  # Oxford mirror (torchvision)
     "https://pjreddie.com/media/files/VOCtrainval_11-May-2012.tar",                 # J. Redmon's mirror
     "https://data.pjreddie.com/files/VOCtrainval_11-May-2012.tar"),                 # its newer address
    size=1_999_639_040, checksum="md5:6cd6e144f989b92b3379bac3b3de84fd",  # the md5 torchvision verifies
    unpack=("VOCdevkit/VOC2012", "PascalVOC12"))
VOC_MASKS = RemoteFile(  # SBD-derived masks from the DeepLab authors; size and checksum not known for certain
    "SegmentationClassAug.zip",
    ("http://cs.jhu.edu/~cxliu/data/SegmentationClassAug.zip",
     "https://www.dropbox.com/s/oeu149j8qtbs1x0/SegmentationClassAug.zip?dl=1"),   # DeepLabV3Plus-Pytorch's
    unpack=("SegmentationClassAug", "PascalVOC12/SegmentationClassAug"))
VOC_LISTS = RemoteFile(  # train_aug.txt / val.txt in the DeepLab line order; no other known mirror of the zip
    "list.zip", ("http://cs.jhu.edu/~cxliu/data/list.zip",), unpack=("list", "PascalVOC12/splits"))
ADE_ZIP = RemoteFile(
    "ADEChallengeData2016.zip",
    ("http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip",     # official (MIT CSAIL)
     "https://paddleseg.bj.bcebos.com/dataset/ADEChallengeData2016.zip"),         # PaddleSeg's copy
    checksum="sha1:219e1696abb36c8ba3a3afe7fb2f4b4606a897c7",  # the sha1 GluonCV's downloader verifies
    unpack=("ADEChallengeData2016", "ADEChallengeData2016"))

# MiB's index files, raw from its GitHub repository (a mirror base is a copy of that repository).
MIB_REPOSITORY_MIRRORS = ("https://raw.githubusercontent.com/fcdl94/MiB/master/",
                          "https://cdn.jsdelivr.net/gh/fcdl94/MiB@master/")
MIB_INDEX_STEPS = {"voc": {"19-1": 2, "15-5": 2, "15-5s": 6, "19-1-ov": 2, "15-5-ov": 2, "15-5s-ov": 6},
                   "ade": {"100-50": 2, "100-10": 6, "50": 3, "100-50b": 2, "100-10b": 6, "50b": 3}}
MIB_INDEX_FILES = tuple(
    RemoteFile(name, tuple(base + name for base in MIB_REPOSITORY_MIRRORS))
    for dataset, folders in MIB_INDEX_STEPS.items() for folder, steps in folders.items()
    for name in (f"data/{dataset}/{folder}/train-{step}.npy" for step in range(steps)))

DATASETS: dict[str, tuple[RemoteFile, ...]] = {
    "voc": (VOC_TRAINVAL, VOC_MASKS, VOC_LISTS), "ade": (ADE_ZIP,), "mib-index": MIB_INDEX_FILES}
DOWNLOAD_DIR = "downloads"


class DownloadError(RuntimeError):
    """Every mirror failed; the message says how to fetch the file by hand and where to put it.

    ``failures`` lists (url, reason, not_found) per attempt; ``not_found`` is True for HTTP 404/410.
    """

    def __init__(self, message: str, failures: Sequence[tuple[str, str, bool]] = ()) -> None:
        super().__init__(message)
        self.failures = list(failures)

    @property
    def not_found(self) -> bool:
        """True when every mirror answered that the file does not exist."""
        return bool(self.failures) and all(not_found for _, _, not_found in self.failures)


class _MirrorFailed(Exception):
    def __init__(self, reason: str, not_found: bool = False) -> None:
        super().__init__(reason)
        self.not_found = not_found


# ---------------------------------------------------------------- downloads

def file_digests(path: str | Path, checksum: Optional[str] = None) -> dict[str, str]:
    """md5 and sha256 of a file (plus the algorithm of ``checksum``), in one pass."""
    algorithms = {"md5", "sha256"} | ({checksum.partition(":")[0]} if checksum else set())
    hashers = {name: hashlib.new(name) for name in sorted(algorithms)}
    with open(path, "rb") as stream:
        while block := stream.read(CHUNK_BYTES):
            for hasher in hashers.values():
                hasher.update(block)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def verify_file(path: str | Path, checksum: Optional[str] = None, size: Optional[int] = None) -> dict:
    """Size and digests of ``path`` and whether they match; ``problem`` is None when they do."""
    if checksum is not None and checksum.partition(":")[0] not in ("md5", "sha1", "sha256"):
        raise ValueError(f"checksum must look like 'md5:<hex>', 'sha1:<hex>' or 'sha256:<hex>', got {checksum!r}")
    found = {"path": str(path), "size": Path(path).stat().st_size, "checksum": checksum,
             "checksum_verified": False, "problem": None}
    if size is not None and found["size"] != size:
        found["problem"] = f"has {found['size']:,} bytes, expected {size:,}"
        return found
    found.update(file_digests(path, checksum))
    if checksum is not None:
        algorithm, _, expected = checksum.partition(":")
        if found[algorithm] != expected.lower():
            found["problem"] = f"has {algorithm} {found[algorithm]}, expected {expected}"
        else:
            found["checksum_verified"] = True
    return found


def _manual_instructions(name: str, urls: Sequence[str], destination: Path, size: Optional[int],
                         checksum: Optional[str], failures: Sequence[tuple[str, str, bool]]) -> str:
    expected = ", ".join(part for part in (f"{size:,} bytes" if size else "", checksum or "") if part)
    lines = [f"could not download {name} from any mirror:"]
    lines += [f"  - {url}: {reason}" for url, reason, _ in failures]
    lines += ["Fetch it by hand (a browser, `wget -c URL` or `curl -L -C - -O URL`) from one of:"]
    lines += [f"    {url}" for url in urls]
    lines += [f"and save it as {destination}" + (f" ({expected})" if expected else "") + ",",
              "then run the same command again: it verifies the file and carries on from there."]
    return "\n".join(lines)


def _total_from_content_range(value: Optional[str]) -> Optional[int]:
    """The total size in a ``Content-Range: bytes a-b/N`` or ``bytes */N`` header."""
    total = (value or "").rpartition("/")[2].strip()
    return int(total) if total.isdigit() else None


def _stream(response, part: Path, start: int, total: Optional[int], progress: bool) -> Optional[str]:
    """Write the body to ``part`` (appended at ``start`` > 0); return why it stopped early, if it did."""
    with open(part, "ab" if start else "wb") as stream, tqdm(
            total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name[:-len(".part")], disable=not progress) as bar:
        try:
            while block := response.read(CHUNK_BYTES):
                stream.write(block)
                bar.update(len(block))
        except (OSError, http.client.HTTPException) as error:  # reset or timeout mid-body
            return str(error) or type(error).__name__
    now = part.stat().st_size
    return "short read" if total is not None and now < total else None


def _fetch(url: str, part: Path, size: Optional[int], progress: bool, timeout: float,
           log: Callable[[str], None]) -> None:
    """Bring ``part`` to the full file from ``url``, resuming with HTTP Range after interruptions."""
    stalls = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        if size is not None and have >= size:
            if have == size:
                return
            part.unlink()  # longer than the file: not a prefix of it
            have = 0
        headers = {"User-Agent": USER_AGENT, **({"Range": f"bytes={have}-"} if have else {})}
        try:
            response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
        except urllib.error.HTTPError as error:
            total = _total_from_content_range(error.headers.get("Content-Range"))
            error.close()
            if error.code == 416 and have:  # nothing after `have`: complete, or not a prefix of this file
                if total == have:
                    return
                part.unlink()
                continue
            raise _MirrorFailed(f"HTTP {error.code} {error.reason}", not_found=error.code in (404, 410)) from None
        except (OSError, http.client.HTTPException) as error:  # refused, DNS, timeout (URLError is an OSError)
            raise _MirrorFailed(str(getattr(error, "reason", error)) or type(error).__name__) from None
        with response:
            start = have if response.status == 206 else 0  # 200: the server ignored Range, start over
            if start and not response.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
                part.unlink()  # a range we did not ask for: start over
                continue
            length = response.headers.get("Content-Length", "")
            total = _total_from_content_range(response.headers.get("Content-Range")) if start else None
            total = total or (start + int(length) if length.isdigit() else None)
            if size is not None and total is not None and total != size:
                raise _MirrorFailed(f"serves {total:,} bytes, expected {size:,}")
            interrupted = _stream(response, part, start, total, progress)
        if interrupted is None:
            return
        now = part.stat().st_size
        stalls = 0 if now > have else stalls + 1
        if stalls >= MAX_STALLS:
            raise _MirrorFailed(f"interrupted {MAX_STALLS} times without progress ({interrupted}); "
                                f"{now:,} bytes kept in {part}")
        log(f"{url}: interrupted at {now:,} bytes ({interrupted}); resuming")
        time.sleep(min(2 ** stalls - 1, 30))


def download_file(urls: str | Sequence[str], destination: str | Path, checksum: Optional[str] = None,
                  size: Optional[int] = None, progress: bool = True, *, timeout: float = 60.0,
                  validate: Optional[Callable[[Path], Optional[str]]] = None,
                  log: Optional[Callable[[str], None]] = None) -> dict:
    """Download ``destination`` from the first mirror in ``urls`` that delivers the right bytes.

    The data goes to ``<destination>.part`` (resumed with HTTP Range, restarted if a server ignores
    Range) and is renamed once its size and checksum match; a mismatch deletes the part and moves on
    to the next mirror, and so does a problem returned by ``validate(path)`` (for example an HTML
    error page where an archive was expected). A resumed download that fails verification is
    fetched once more from the start. An existing ``destination`` is verified instead of fetched.
    Returns `verify_file`'s dict plus "url" (None when the file was already there); raises
    `DownloadError` with manual instructions when every mirror fails.
    """
    urls = [urls] if isinstance(urls, str) else list(urls)
    destination, log = Path(destination), log or (lambda message: None)

    def inspect(path: Path) -> dict:
        found = verify_file(path, checksum, size)
        if found["problem"] is None and validate is not None:
            found["problem"] = validate(path)
        return found

    if destination.is_file():
        found = inspect(destination)
        if found["problem"]:
            raise DownloadError(f"{destination} exists but {found['problem']}: it is not the expected file. "
                                "Delete it (or replace it with the right file) and run again.")
        return {**found, "url": None}
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + ".part")
    failures: list[tuple[str, str, bool]] = []
    for url in urls:
        for attempt in ("resume", "from scratch"):
            resumed = part.exists()  # bytes from an earlier run or another mirror
            try:
                _fetch(url, part, size, progress, timeout, log)
            except _MirrorFailed as error:
                failures.append((url, str(error), error.not_found))
                log(f"{url}: {error}")
                break
            found = inspect(part)
            if found["problem"] is None:
                os.replace(part, destination)
                return {**found, "path": str(destination), "url": url}
            part.unlink()
            if resumed and attempt == "resume":  # the kept prefix may be what was wrong
                log(f"{url}: the resumed download {found['problem']}; fetching it again from the start")
                continue
            failures.append((url, f"rejected: the download {found['problem']}", False))
            log(f"{url}: rejected, the download {found['problem']}")
            break
    message = _manual_instructions(destination.name, urls, destination, size, checksum, failures)
    if part.exists():
        message += f"\n(The partial download {part} is kept; the next run resumes it.)"
    raise DownloadError(message, failures)


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
