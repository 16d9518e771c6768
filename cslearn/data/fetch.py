"""HTTP downloads of single files for `cslearn.data.download`: mirrors tried in order, resumable
transfers (HTTP Range into ``<file>.part``, restarted when a server ignores Range, given up after
`MAX_STALLS` interruptions without progress), size and checksum verification (`verify_file`,
`file_digests`), and a `DownloadError` that says which file to fetch by hand, from where, and
where to put it when every mirror fails. `download_file` is the entry point.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

USER_AGENT = "cslearn-downloader (Python urllib)"
CHUNK_BYTES = 1 << 20
MAX_STALLS = 3  # interrupted attempts in a row without new bytes before a mirror is given up


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
