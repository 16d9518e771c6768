"""What `cslearn.data.download` fetches: each file (`RemoteFile`) with its mirrors, its size and
checksum when known for certain, and where its folder goes once unpacked; VOC-aug (`VOC_TRAINVAL`,
`VOC_MASKS`, `VOC_LISTS`), ADE20K (`ADE_ZIP`) and MiB's per-step index files (`MIB_INDEX_FILES`),
grouped by dataset name in `DATASETS` ("voc", "ade", "mib-index").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


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
