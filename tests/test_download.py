"""Downloads against a local HTTP server (127.0.0.1 only): mirrors, resume, checksums, safe extraction,
and whole datasets built from generated archives in the real formats, ending with a passing data check."""
from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from cslearn.__main__ import main
from cslearn.data import download, fetch
from cslearn.data.download import (DownloadError, UnsafeArchiveError, download_dataset, download_file,
                                   safe_extract)
from cslearn.data.mib_index import mib_index_path
from cslearn.data.synthetic import make_ade_folder, make_voc_folder

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes
PAYLOAD_MD5 = "md5:" + hashlib.md5(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Any connection to a host other than 127.0.0.1 fails the test instead of reaching the internet."""
    connect = socket.create_connection

    def guarded(address, *args, **kwargs):
        assert address[0] == "127.0.0.1", f"test tried to reach {address[0]}"
        return connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.directory``; honours ``Range`` unless ``server.ignore_range``; paths in
    ``server.cut_once`` get half their body on the first request, then the connection closes."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        server, path = self.server, self.path.split("?")[0]
        server.requests.append((path, self.headers.get("Range")))
        file = server.directory / path.lstrip("/")
        if not file.is_file():
            self.send_error(404)
            return
        data, start = file.read_bytes(), 0
        requested = self.headers.get("Range")
        if requested and not server.ignore_range:
            start = int(requested.removeprefix("bytes=").rstrip("-"))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if path in server.cut_once:
            server.cut_once.discard(path)
            body = body[: len(body) // 2]
        if path in server.stall:  # 1,000 bytes on the first request, nothing after
            body = body[:1000] if server.stall[path] == 0 else b""
            server.stall[path] += 1
        server.sent.append((path, len(body)))  # before writing: the client may finish before this thread runs again
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server in a thread; stopped by the finaliser, or by a watchdog after 60 s."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.directory = tmp_path / "served"
    httpd.directory.mkdir()
    httpd.requests, httpd.sent, httpd.cut_once, httpd.stall, httpd.ignore_range = [], [], set(), {}, False
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    watchdog = threading.Timer(60, httpd.shutdown)
    watchdog.daemon = True
    watchdog.start()
    yield httpd
    watchdog.cancel()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def _serve(server, relative: str, data: bytes) -> str:
    path = server.directory / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"{server.url}/{relative}"


def _refused_url() -> str:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/file.bin"


# ---------------------------------------------------------------- download_file

def test_checksum_mismatch_is_rejected_and_the_next_mirror_used(server, tmp_path):
    corrupt = bytearray(PAYLOAD)
    corrupt[1000] ^= 0xFF  # same size, one byte differs
    urls = [_serve(server, "bad/file.bin", bytes(corrupt)), _serve(server, "good/file.bin", PAYLOAD)]
    logged = []
    record = download_file(urls, tmp_path / "out" / "file.bin", PAYLOAD_MD5, len(PAYLOAD), progress=False,
                           log=logged.append)
    assert record["url"] == urls[1] and record["checksum_verified"]
    assert (tmp_path / "out" / "file.bin").read_bytes() == PAYLOAD
    assert not (tmp_path / "out" / "file.bin.part").exists()
    assert any("rejected" in message and "md5" in message for message in logged)


def test_sha256_and_size_are_checked_too(server, tmp_path):
    url = _serve(server, "file.bin", PAYLOAD)
    with pytest.raises(DownloadError, match="expected 5"):  # the server announces another size: skipped
        download_file([url], tmp_path / "a.bin", size=5, progress=False)
    sha256 = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()
    assert download_file([url], tmp_path / "b.bin", sha256, progress=False)["checksum_verified"]


def test_unknown_checksum_returns_the_digests_to_compare(server, tmp_path):
    record = download_file(_serve(server, "file.bin", PAYLOAD), tmp_path / "file.bin", progress=False)
    assert not record["checksum_verified"] and record["md5"] == PAYLOAD_MD5[4:]
    assert record["sha256"] == hashlib.sha256(PAYLOAD).hexdigest() and record["size"] == len(PAYLOAD)


def test_interrupted_download_is_resumed_with_range(server, tmp_path):
    url = _serve(server, "file.bin", PAYLOAD)
    server.cut_once.add("/file.bin")
    record = download_file([url], tmp_path / "file.bin", PAYLOAD_MD5, len(PAYLOAD), progress=False)
    assert record["checksum_verified"] and (tmp_path / "file.bin").read_bytes() == PAYLOAD
    half = len(PAYLOAD) // 2
    assert server.requests == [("/file.bin", None), ("/file.bin", f"bytes={half}-")]
    assert [sent for _, sent in server.sent] == [half, len(PAYLOAD) - half]  # nothing fetched twice


def test_existing_part_file_is_continued_not_restarted(server, tmp_path):
    url = _serve(server, "file.bin", PAYLOAD)
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD[:40_000])
    download_file([url], tmp_path / "file.bin", PAYLOAD_MD5, len(PAYLOAD), progress=False)
    assert server.requests == [("/file.bin", "bytes=40000-")]
    assert server.sent == [("/file.bin", len(PAYLOAD) - 40_000)]
    assert (tmp_path / "file.bin").read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    url = _serve(server, "file.bin", PAYLOAD)
    server.ignore_range = True
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD[:40_000])
    download_file([url], tmp_path / "file.bin", PAYLOAD_MD5, len(PAYLOAD), progress=False)
    assert server.sent == [("/file.bin", len(PAYLOAD))] and (tmp_path / "file.bin").read_bytes() == PAYLOAD


def test_complete_part_file_is_only_verified(server, tmp_path):
    url = _serve(server, "file.bin", PAYLOAD)
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD)
    download_file([url], tmp_path / "file.bin", PAYLOAD_MD5, progress=False)  # size unknown: asks, gets 416
    assert server.sent == [] and (tmp_path / "file.bin").read_bytes() == PAYLOAD


def test_stalling_mirror_is_given_up_and_a_bad_prefix_refetched(server, tmp_path, monkeypatch):
    monkeypatch.setattr(fetch.time, "sleep", lambda seconds: None)  # no back-off waits in the test
    corrupt = b"\0" * 1000 + PAYLOAD[1000:]
    urls = [_serve(server, "stalls/file.bin", corrupt), _serve(server, "good/file.bin", PAYLOAD)]
    server.stall["/stalls/file.bin"] = 0
    logged = []
    record = download_file(urls, tmp_path / "file.bin", PAYLOAD_MD5, progress=False, log=logged.append)
    assert record["url"] == urls[1] and (tmp_path / "file.bin").read_bytes() == PAYLOAD
    assert server.stall["/stalls/file.bin"] == 1 + fetch.MAX_STALLS  # one useful answer, then no progress
    assert [request for request in server.requests if request[0] == "/good/file.bin"] == [
        ("/good/file.bin", "bytes=1000-"), ("/good/file.bin", None)]  # resumed, checksum failed, refetched
    assert any("from the start" in message for message in logged)


def test_error_page_instead_of_an_archive_is_rejected(server, tmp_path):
    urls = [_serve(server, "page/list.zip", b"<html>quota exceeded</html>"),
            _serve(server, "real/list.zip", _zip_bytes({"list/val.txt": "x"}))]
    record = download_file(urls, tmp_path / "list.zip", progress=False, validate=download.archive_problem)
    assert record["url"] == urls[1]


def _zip_bytes(files: dict[str, str]) -> bytes:
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w") as bundle:
        for name, text in files.items():
            bundle.writestr(name, text)
    return stream.getvalue()


def test_missing_and_unreachable_mirrors_are_skipped(server, tmp_path):
    urls = [f"{server.url}/nowhere/file.bin", _refused_url(), _serve(server, "file.bin", PAYLOAD)]
    record = download_file(urls, tmp_path / "file.bin", PAYLOAD_MD5, progress=False, timeout=5)
    assert record["url"] == urls[2]


def test_all_mirrors_failing_gives_manual_instructions(server, tmp_path):
    urls = [f"{server.url}/nowhere/file.bin", _refused_url()]
    destination = tmp_path / "root" / "downloads" / "file.bin"
    with pytest.raises(DownloadError) as caught:
        download_file(urls, destination, PAYLOAD_MD5, len(PAYLOAD), progress=False, timeout=5)
    message = str(caught.value)
    assert "HTTP 404" in message and "by hand" in message and str(destination) in message
    assert all(url in message for url in urls) and PAYLOAD_MD5 in message and "102,400 bytes" in message
    assert caught.value.not_found is False and not destination.exists()


def test_existing_file_that_does_not_match_is_reported(tmp_path):
    (tmp_path / "file.bin").write_bytes(b"wrong")
    with pytest.raises(DownloadError, match="not the expected file"):
        download_file(["http://127.0.0.1:9/never-asked"], tmp_path / "file.bin", PAYLOAD_MD5, progress=False)


# ---------------------------------------------------------------- safe_extract

def _tar_with(path: Path, *members: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w") as bundle:
        bundle.addfile(tarfile.TarInfo("fine/ok.txt"), io.BytesIO(b""))
        for member in members:
            bundle.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, linkname
    member.size = 1 if kind == tarfile.REGTYPE else 0
    return member


@pytest.mark.parametrize("members, reason", [
    ([_member("../evil.txt")], "contains '..'"),
    ([_member("fine/../../evil.txt")], "contains '..'"),
    ([_member("/tmp/cslearn-evil.txt")], "absolute path"),
    ([_member("link", tarfile.SYMTYPE, "/etc")], "symlink"),
    ([_member("fine/link", tarfile.SYMTYPE, "../../..")], "symlink"),
    ([_member("hard", tarfile.LNKTYPE, "../evil.txt")], "hard link"),
    ([_member("inside", tarfile.SYMTYPE, "fine"), _member("inside/x.txt")], "through a symlink"),
])
def test_tar_members_escaping_the_target_are_refused(tmp_path, members, reason):
    archive = _tar_with(tmp_path / "bad.tar", *members)
    target = tmp_path / "work" / "target"
    with pytest.raises(UnsafeArchiveError, match=reason):
        safe_extract(archive, target)
    assert not target.exists()  # refused whole: nothing written, inside or outside
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["bad.tar"]


@pytest.mark.parametrize("name", ["../evil.txt", "fine/../../evil.txt", "/evil.txt"])
def test_zip_members_escaping_the_target_are_refused(tmp_path, name):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("fine/ok.txt", "ok")
        bundle.writestr(zipfile.ZipInfo(name), "evil")
    assert name in zipfile.ZipFile(archive).namelist()
    with pytest.raises(UnsafeArchiveError, match=r"absolute path|'\.\.'"):
        safe_extract(archive, tmp_path / "work" / "target")
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["bad.zip"]


def test_safe_archives_extract_with_links_inside(tmp_path):
    archive = _tar_with(tmp_path / "ok.tar", _member("fine/link", tarfile.SYMTYPE, "ok.txt"))
    target = safe_extract(archive, tmp_path / "target")
    assert (target / "fine" / "ok.txt").is_file() and (target / "fine" / "link").is_symlink()
    (tmp_path / "not-an-archive").write_bytes(b"plain")
    with pytest.raises(ValueError, match="neither a tar nor a zip"):
        safe_extract(tmp_path / "not-an-archive", tmp_path / "t2")


# ---------------------------------------------------------------- whole datasets

def _pack_tar(path: Path, source: Path, prefix: str) -> bytes:
    with tarfile.open(path, "w") as bundle:
        for file in sorted(source.rglob("*")):
            bundle.add(file, arcname=f"{prefix}/{file.relative_to(source).as_posix()}", recursive=False)
    return path.read_bytes()


def _pack_zip(path: Path, source: Path, prefix: str) -> bytes:
    with zipfile.ZipFile(path, "w") as bundle:
        for file in sorted(source.rglob("*")):
            bundle.write(file, f"{prefix}/{file.relative_to(source).as_posix()}")
    return path.read_bytes()


@pytest.fixture
def voc_mirror(server, tmp_path, monkeypatch):
    """The three VOC archives laid out like the published ones, served from one mirror folder."""
    source = make_voc_folder(tmp_path / "source", num_train=6, num_val=3, mask_mode="L") / "PascalVOC12"
    devkit = tmp_path / "devkit"  # what the VOC tar holds: images, palette masks, ImageSets
    (devkit / "JPEGImages").mkdir(parents=True)
    for image in (source / "JPEGImages").iterdir():
        image.rename(devkit / "JPEGImages" / image.name)
    (devkit / "ImageSets" / "Segmentation").mkdir(parents=True)
    (devkit / "ImageSets" / "Segmentation" / "train.txt").write_text("2011_000000\n")
    (devkit / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000000\n")
    tar = _pack_tar(tmp_path / "VOCtrainval_11-May-2012.tar", devkit, "VOCdevkit/VOC2012")
    masks = _pack_zip(tmp_path / "SegmentationClassAug.zip", source / "SegmentationClassAug", "SegmentationClassAug")
    lists = _pack_zip(tmp_path / "list.zip", source / "splits", "list")
    for name, data in (("VOCtrainval_11-May-2012.tar", tar), ("SegmentationClassAug.zip", masks),
                       ("list.zip", lists)):
        _serve(server, f"mirror/{name}", data)
    trainval = replace(download.VOC_TRAINVAL, size=len(tar), checksum="md5:" + hashlib.md5(tar).hexdigest())
    monkeypatch.setitem(download.DATASETS, "voc", (trainval, download.VOC_MASKS, download.VOC_LISTS))
    return f"{server.url}/mirror/"


def test_download_voc_end_to_end(server, voc_mirror, tmp_path):
    root = tmp_path / "data"
    result = download_dataset("voc", root, mirrors=[voc_mirror], progress=False)
    assert result["problems"] == [] and result["check"]["layout"] == "mib"
    assert result["check"]["splits"]["train"]["images"] == 6 and result["check"]["splits"]["val"]["images"] == 3
    base = root / "PascalVOC12"
    assert (base / "splits" / "train_aug.txt").is_file() and (base / "SegmentationClassAug").is_dir()
    assert (base / "JPEGImages").is_dir() and (base / "ImageSets" / "Segmentation" / "val.txt").is_file()
    assert not (root / "VOCdevkit").exists() and not (root / "downloads" / "extracted").exists()
    assert not (root / "downloads" / "VOCtrainval_11-May-2012.tar").exists()  # archives removed by default
    verified = {record["name"]: record["checksum_verified"] for record in result["files"]}
    assert verified == {"VOCtrainval_11-May-2012.tar": True, "SegmentationClassAug.zip": False, "list.zip": False}
    assert sum("no published checksum" in note for note in result["notes"]) == 2

    requests = len(server.requests)  # a second run finds every step done: no request, same check
    again = download_dataset("voc", root, mirrors=[voc_mirror], progress=False)
    assert len(server.requests) == requests and again["problems"] == [] and again["files"] == []
    assert all("already in place" in step for step in again["steps"])


def test_voc_download_resumes_after_a_failed_mirror_run(server, voc_mirror, tmp_path):
    root = tmp_path / "data"
    (server.directory / "mirror" / "list.zip").rename(server.directory / "list.zip")  # one file missing
    with pytest.raises(DownloadError, match=r"(?s)list\.zip.*by hand") as caught:
        download_dataset("voc", root, mirrors=[voc_mirror], progress=False)
    assert str(root / "downloads" / "list.zip") in str(caught.value)
    assert not (root / "PascalVOC12").exists()  # nothing extracted before every archive is there
    (server.directory / "list.zip").rename(server.directory / "mirror" / "list.zip")
    server.requests.clear()
    result = download_dataset("voc", root, mirrors=[voc_mirror], progress=False, keep_archives=True)
    assert server.requests == [("/mirror/list.zip", None)]  # the other two were kept and verified
    assert result["problems"] == [] and (root / "downloads" / "list.zip").is_file()


def test_extraction_interrupted_before_its_marker_is_redone_into_the_existing_folders(server, voc_mirror, tmp_path):
    root = tmp_path / "data"
    download_dataset("voc", root, mirrors=[voc_mirror], progress=False, keep_archives=True, check=False)
    for marker in (root / "downloads").glob(".*.arranged"):  # as if the run had stopped after moving
        marker.unlink()
    (root / "PascalVOC12" / "splits" / "val.txt").unlink()  # ... and before finishing the last move
    server.requests.clear()
    result = download_dataset("voc", root, mirrors=[voc_mirror], progress=False)
    assert server.requests == [] and result["problems"] == []  # archives verified, not fetched again
    assert (root / "PascalVOC12" / "splits" / "val.txt").is_file()


def test_download_ade_end_to_end(server, tmp_path, monkeypatch):
    source = make_ade_folder(tmp_path / "source", num_train=5, num_val=3)
    archive = _pack_zip(tmp_path / "ade.zip", source / "ADEChallengeData2016", "ADEChallengeData2016")
    _serve(server, "ade-mirror/ADEChallengeData2016.zip", archive)
    sha1 = "sha1:" + hashlib.sha1(archive).hexdigest()
    monkeypatch.setitem(download.DATASETS, "ade", (replace(download.ADE_ZIP, checksum=sha1),))
    root = tmp_path / "data"
    result = download_dataset("ade", root, mirrors=[f"{server.url}/ade-mirror"], progress=False)
    assert result["problems"] == [] and result["files"][0]["checksum_verified"]
    assert result["check"]["splits"]["train"]["images"] == 5
    assert len(list((root / "ADEChallengeData2016" / "annotations" / "validation").glob("*.png"))) == 3
    assert "no problems found" in download.format_download_report(result)


def test_cli_download_prints_the_check_or_the_manual_instructions(server, tmp_path, monkeypatch, capsys):
    source = make_ade_folder(tmp_path / "source", num_train=3, num_val=2)
    _pack_zip(server.directory / "ADEChallengeData2016.zip", source / "ADEChallengeData2016", "ADEChallengeData2016")
    monkeypatch.setitem(download.DATASETS, "ade", (replace(download.ADE_ZIP, checksum=None),))
    code = main(["data", "download", "ade", "--root", str(tmp_path / "data"), "--mirror", server.url, "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0 and "no problems found" in printed and "no published checksum" in printed
    code = main(["data", "download", "voc", "--root", str(tmp_path / "voc"), "--mirror", server.url,
                 "--no-progress"])
    error = capsys.readouterr().err
    assert code == 2 and "by hand" in error and str(tmp_path / "voc" / "downloads" / "list.zip") in error


def test_mib_index_files_are_validated_and_absent_ones_noted(server, tmp_path):
    _serve(server, "MiB/data/voc/15-5s-ov/train-3.npy", _npy(np.array([0, 5, 10581])))
    _serve(server, "MiB/data/ade/100-50/train-0.npy", _npy(np.arange(100, dtype=np.int64)))
    _serve(server, "MiB/data/voc/19-1/train-0.npy", _npy(np.array([3, 10582])))  # out of range: rejected
    _serve(server, "copy/data/voc/19-1/train-0.npy", _npy(np.array([3, 10581], dtype=np.int32)))
    root = tmp_path / "data"
    result = download_dataset("mib-index", root, mirrors=[f"{server.url}/MiB/", f"{server.url}/copy"], progress=False)
    assert {record["name"]: record["url"].split("/")[3] for record in result["files"]} == {
        "data/voc/19-1/train-0.npy": "copy", "data/voc/15-5s-ov/train-3.npy": "MiB",
        "data/ade/100-50/train-0.npy": "MiB"}
    assert mib_index_path(root / "mib-index" / "voc", "15-1", 3, overlapped=True).is_file()
    assert any("not in MiB's repository" in note and "data/ade/50b/train-2.npy" in note for note in result["notes"])

    with pytest.raises(DownloadError, match=r"(?s)19-1/train-0\.npy.*10582.*github\.com/fcdl94/MiB"):
        download_dataset("mib-index", tmp_path / "other", mirrors=[f"{server.url}/MiB/"], progress=False)
    assert (tmp_path / "other" / "mib-index" / "ade" / "100-50" / "train-0.npy").is_file()  # valid ones kept
    assert not (tmp_path / "other" / "mib-index" / "voc" / "19-1" / "train-0.npy").exists()
    with pytest.raises(DownloadError, match="no index file was found"):
        download_dataset("mib-index", tmp_path / "empty", mirrors=[f"{server.url}/nothing/"], progress=False)


def _npy(array: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.save(stream, array)
    return stream.getvalue()


def test_registry_lists_real_mirrors_and_only_known_checksums():
    assert download.VOC_TRAINVAL.checksum == "md5:6cd6e144f989b92b3379bac3b3de84fd"
    assert download.VOC_TRAINVAL.size == 1_999_639_040
    assert len(download.VOC_TRAINVAL.urls) >= 2 and len(download.VOC_MASKS.urls) >= 2
    assert download.VOC_MASKS.checksum is None and download.VOC_LISTS.checksum is None
    assert any("cs.jhu.edu/~cxliu/data/" in url for url in download.VOC_MASKS.urls + download.VOC_LISTS.urls)
    assert download.ADE_ZIP.urls[0] == "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip"
    for files in download.DATASETS.values():
        for remote in files:
            assert remote.urls and all(url.startswith(("http://", "https://")) for url in remote.urls)
            assert remote.urls[0].split("?")[0].endswith(remote.name)
    names = {remote.name for remote in download.DATASETS["mib-index"]}
    assert "data/voc/15-5s-ov/train-5.npy" in names and "data/ade/50b/train-2.npy" in names
