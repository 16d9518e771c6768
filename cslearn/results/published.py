"""The published tables of MiB, PLOP, SDR and UCD as `Published` records, and `lookup`.

Transcribed cell by cell from the project's reference tables (`results.md` of the course
material), which record where each number was read and how far it was verified. Each table is
kept below in the paper's layout (one line per printed row, columns in the order printed, "-" =
no number) so that it can be re-read against its source; the code after it adds provenance.
Check a table's convention with `fits_identity`: "all" is the class-weighted mean of "old" and
"new", with channel 0 counted only if the table counts background.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from cslearn.protocol import NAMED_TASKS, get_task

SOURCES = ("MiB", "PLOP", "SDR", "UCD")
# "partition": MiB's fixed ADE image partition (its shipped index files, `data.index_dir`);
# "sequential": SDR's setting in which old-class pixels keep their labels (not a cslearn setting).
SETTINGS = ("disjoint", "overlapped", "partition", "sequential")


@dataclass(frozen=True)
class Published:
    """One published row: a method's numbers on one dataset, task and setting (mIoU %, last step)."""

    source: str  # the paper whose table prints the numbers: "MiB", "PLOP", "SDR" or "UCD"
    method: str  # a cslearn METHODS key where one exists, else the paper's name (EWC, PI, RW, CIL)
    dataset: str  # "voc" or "ade"
    task: str  # cslearn task name ("15-1" is MiB's "15-5s", "10-1" is SDR's "10-10s")
    setting: str  # one of SETTINGS
    old: Optional[float]  # classes of step 0 (channel 0 counted only if background == "included")
    new: Optional[float]  # classes added after step 0 (never channel 0)
    all: Optional[float]
    background: str  # "excluded" or "included" in the "old" and "all" means
    status: str  # results.md's mark: V-img, V-chart, 2nd, "C: <source>", UNVERIFIED
    table: str  # where the numbers were read
    paper_method: str  # the row name as printed ("PLOP*", "ILT†", "SDR+MiB")
    avg: Optional[float] = None  # PLOP: the mean over steps of "all" measured after each step
    groups: tuple[tuple[str, float], ...] = ()  # further columns: ("101-110", 10.4) = mean of those channels
    cell_status: tuple[tuple[str, str], ...] = ()  # per-cell marks that differ from `status`
    flag: str = ""  # results.md flags a cell as wrong or doubtful: re-check before quoting
    note: str = ""
    rounding: float = 0.1  # the print's precision (0.01 for PLOP's own runs)

    def status_of(self, cell: str) -> str:
        return dict(self.cell_status).get(cell, self.status)

    def values(self) -> dict[str, float]:
        """Every printed number: old, new, all, avg and the groups (absent ones left out)."""
        values = {"old": self.old, "new": self.new, "all": self.all, "avg": self.avg, **dict(self.groups)}
        return {name: value for name, value in values.items() if value is not None}


# The paper's row names -> cslearn METHODS keys (after dropping the marks † and *).
METHOD_KEYS = {"FT": "ft", "Joint": "joint", "LwF": "lwf", "LwF-MC": "lwf-mc", "ILT": "ilt", "MiB": "mib",
               "PLOP": "plop", "SDR": "sdr", "SDR+MiB": "mib+sdr", "MiB+SDR": "mib+sdr",
               "MiB+UCD": "mib+ucd", "PLOP+UCD": "plop+ucd"}
VOC_COLUMNS = [(task, setting) for task in ("19-1", "15-5", "15-1") for setting in ("disjoint", "overlapped")]

# MiB, CVPR 2020, VOC table. Per task and setting: old (1-19 / 1-15), new (20 / 16-20), all.
#        19-1 D            19-1 O            15-5 D            15-5 O            15-1 D            15-1 O
MIB_VOC = """
FT       5.8 12.3  6.2    6.8 12.9  7.1    1.1 33.6  9.2    2.1 33.1  9.8    0.2  1.8  0.6    0.2  1.8  0.6
PI       5.4 14.1  5.9    7.5 14.0  7.8    1.3 34.1  9.5    1.6 33.3  9.5    0.0  1.8  0.4    0.0  1.8  0.5
EWC     23.2 16.0 22.9   26.9 14.0 26.3   26.7 37.7 29.4   24.3 35.5 27.1    0.3  4.3  1.3    0.3  4.3  1.3
RW      19.4 15.7 19.2   23.3 14.2 22.9   17.9 36.9 22.7   16.6 34.9 21.2    0.2  5.4  1.5    0.0  5.2  1.3
LwF     53.0  9.1 50.8   51.2  8.5 49.1   58.4 37.4 53.1   58.9 36.6 53.3    0.8  3.6  1.5    1.0  3.9  1.8
LwF-MC  63.0 13.2 60.5   64.4 13.3 61.9   67.2 41.2 60.7   58.1 35.0 52.3    4.5  7.0  5.2    6.4  8.4  6.9
ILT     69.1 16.4 66.4   67.1 12.3 64.4   63.2 39.5 57.3   66.3 40.6 59.9    3.7  5.7  4.2    4.9  7.8  5.7
MiB     69.6 25.6 67.4   70.2 22.1 67.8   71.8 43.3 64.7   75.5 49.4 69.0   46.2 12.9 37.9   35.1 13.5 29.7
Joint   77.4 78.0 77.4   77.4 78.0 77.4   79.1 72.6 77.4   79.1 72.6 77.4   79.1 72.6 77.4   79.1 72.6 77.4
"""

# UCD, TPAMI 2022, Table 1: same layout. "*" = the UCD authors' re-implementation.
UCD_VOC = """
FT        5.8 12.3  6.2    6.8 12.9  7.1    1.1 33.6  9.2    2.1 33.1  9.8    0.2  1.8  0.6    0.2  1.8  0.6
PI        5.4 14.1  5.9    7.5 14.0  7.8    1.3 34.1  9.5    1.6 33.3  9.5    0.0  1.8  0.4    0.0  1.8  0.4
EWC      23.2 16.0 22.9   26.9 14.0 26.3   26.7 37.7 29.4   24.3 35.5 27.1    0.3  4.3  1.3    0.3  4.3  1.3
RW       19.4 15.7 19.2   23.3 14.2 22.9   17.9 36.9 22.7   16.6 34.9 21.2    0.2  5.4  1.5    0.0  5.2  1.3
LwF      53.0  9.1 50.8   51.2  8.5 49.1   58.4 37.4 53.1   58.9 36.6 53.3    0.8  3.6  1.5    1.0  3.9  1.8
LwF-MC   63.0 13.2 60.5   64.4 13.3 61.9   67.2 41.2 60.7   58.1 35.0 52.3    4.5  7.0  5.2    6.4  8.4  6.9
ILT      69.1 16.4 66.4   67.1 12.3 64.4   63.2 39.5 57.3   66.3 40.6 59.9    3.7  5.7  4.2    4.9  7.8  5.7
MiB      69.6 25.6 67.4   70.2 22.1 67.8   71.8 43.3 64.7   75.5 49.4 69.0   46.2 12.9 37.9   35.1 13.5 29.7
MiB+SDR  70.8 31.4 68.9   71.3 23.4 69.0   74.6 44.1 67.3   76.3 50.2 70.1   59.4 14.3 48.7   47.3 14.7 39.5
MiB+UCD  74.3 28.4 72.0   73.7 34.0 71.7   73.0 46.2 66.3   78.5 50.7 71.5   53.3 14.4 43.5   51.9 13.1 42.2
PLOP*    75.1 38.2 73.2   75.0 39.1 73.2   66.5 39.6 59.8   74.7 49.8 68.5   49.0 13.8 40.2   65.2 22.4 54.5
PLOP+UCD 75.7 31.8 73.5   75.9 39.5 74.0   67.0 39.3 60.1   75.0 51.8 69.2   50.8 13.3 41.4   66.3 21.6 55.1
Joint    77.4 78.0 77.4   77.4 78.0 77.4   79.1 72.6 77.4   79.1 72.6 77.4   79.1 72.6 77.4   79.1 72.6 77.4
"""

# MiB, CVPR 2020, ADE20K table (MiB's fixed image partition).
# 100-50: 1-100, 101-150, all | 100-10: 1-100, 101-110, 111-120, 121-130, 131-140, 141-150, all
# | 50-50: 1-50, 51-100, 101-150, all. (The print's 100-10 headers "100-110, 110-120, ..." mean 101-110, ...)
MIB_ADE_COLUMNS = ([("100-50", cell) for cell in ("old", "new", "all")]
                   + [("100-10", cell) for cell in ("old", "101-110", "111-120", "121-130", "131-140", "141-150", "all")]
                   + [("50-50", cell) for cell in ("old", "51-100", "101-150", "all")])
MIB_ADE = """
FT      0.0 24.9  8.3    0.0  0.0  0.0  0.0  0.0 16.6  1.1    0.0  0.0 22.0  7.3
LwF    21.1 25.6 22.6    0.1  0.0  0.4  2.6  4.6 16.9  1.7    5.7 12.9 22.8 13.9
LwF-MC 34.2 10.5 26.3   18.7  2.5  8.7  4.1  6.5  5.1 14.3   27.8  7.0 10.4 15.1
ILT    22.9 18.9 21.6    0.3  0.0  1.0  2.1  4.6 10.7  1.4    8.4  9.7 14.3 10.8
MiB    37.9 27.9 34.6   31.8 10.4 14.8 12.8 13.6 18.7 25.9   35.5 22.2 23.6 27.0
Joint  44.3 28.2 38.9   44.3 26.1 42.8 26.7 28.1 17.3 38.9   51.1 38.3 28.2 38.9
"""

# PLOP, CVPR 2021, VOC table (overlapped). Per task: old (0-19 / 0-15), new, all, avg.
# † = copied from the MiB paper's overlapped columns (background excluded despite the 0-x headers).
#          19-1                          15-5                          15-1
PLOP_VOC = """
EWC†     26.90 14.00 26.30     -     24.30 35.50 27.10     -      0.30  4.30  1.30     -
LwF-MC†  64.40 13.30 61.90     -     58.10 35.00 52.30     -      6.40  8.40  6.90     -
ILT†     67.10 12.30 64.40     -     66.30 40.60 59.90     -      4.90  7.80  5.70     -
ILT      67.75 10.88 65.05 71.23     67.08 39.23 60.45 70.37      8.75  7.99  8.56 40.16
MiB†     70.20 22.10 67.80     -     75.50 49.40 69.00     -     35.10 13.50 29.70     -
MiB      71.43 23.59 69.15 73.28     76.37 49.97 70.08 75.12     34.22 13.50 29.29 54.19
PLOP     75.35 37.35 73.54 75.47     75.73 51.71 70.09 75.19     65.12 21.11 54.64 67.21
"""

# PLOP paper, VOC 10-1 (overlapped): 0-10, 11-20, all.
PLOP_VOC_10_1 = """
ILT    7.15  3.67  5.50
MiB   12.25 13.09 12.65
PLOP  44.03 15.51 30.45
"""

# PLOP paper, Table 2, ADE20K (overlapped, class order "a"): old (0-100 / 0-50), new, all.
PLOP_ADE_TASKS = ("100-50", "50-50", "100-10", "100-5")
PLOP_ADE = """
ILT   18.29 14.40 17.00    3.53 12.85  9.70    0.11  3.06  1.09      -     -     -
MiB   40.52 17.17 32.79   45.57 21.01 29.31   38.21 11.12 29.24   36.01  5.66 25.96
PLOP  41.87 14.89 32.94   48.83 20.99 30.40   40.48 13.61 31.59   39.11  7.81 28.75
"""

# SDR, CVPR 2021: "all" measured from the authors' bar charts (poster and slides).
SDR_VOC_SETTINGS = ("sequential", "disjoint", "overlapped")
#          19-1 S D O          15-5 S D O          15-1 S D O
SDR_VOC_ALL = """
FT       61.4 34.2 33.8   56.3 14.4 18.3   41.6  5.6  4.5
LwF      65.3 64.0 60.8   62.1 38.2 61.0   29.0 23.6 21.9
ILT      62.3 64.8 49.2   65.7 30.0 63.6   48.3  5.4  4.6
CIL      62.1 60.5 34.0   58.1 40.8 20.2   45.2 29.1  5.9
MiB      66.5 65.1 67.4   66.1 44.3 66.3   29.8 33.3 36.7
SDR      66.8 68.4 67.4   67.2 67.2 69.9   47.0 48.1 39.2
SDR+MiB  68.5 68.9 69.0   67.3 67.3 70.1   47.1 48.7 39.5
"""
# SDR's old / new per task and setting: SDR old new, SDR+MiB old new.
SDR_VOC_OLD_NEW = """
19-1 D   69.9 37.3   70.8 31.4
19-1 O   69.1 32.6   71.3 23.4
15-5 D   73.5 47.3   74.6 44.1
15-5 O   75.4 52.6   76.3 50.2
15-5 S   73.6 46.7   74.6 43.8
15-1 D   59.2 12.9   59.4 14.3
15-1 O   44.7 21.8   47.3 14.7
15-1 S   58.5 10.1   58.1 11.8
"""
# Sequential baselines (CFSSeg, MM 2025, Table 3): 15-1 S old new all, 15-5 S old new all.
SDR_VOC_SEQUENTIAL = """
FT      49.0 17.8 41.6   62.0 38.1 56.3
LwF     33.7 13.7 29.0   68.0 43.0 62.1
LwF-MC  12.1  1.9  9.7   70.6 19.5 58.4
ILT     49.2 30.3 48.3   71.3 47.8 65.7
CIL     52.4 22.3 45.2   63.8 39.8 58.1
MiB     35.7 11.0 29.8   73.0 44.4 66.1
"""
SDR_ADE_TASKS = ("100-50", "50-50", "100-10")
SDR_ADE_ALL = """
FT       7.5 12.6  0.8
LwF     24.6 26.0  5.5
ILT     25.4 28.0  0.8
CIL      7.5 12.6  0.6
MiB     33.3 28.1 15.8
SDR     33.2 29.5 21.7
SDR+MiB 33.5 31.3 23.2
"""
# old / new: 100-50 (1-100 / 101-150), 50-50 (1-50 / 51-150), 100-10 (1-100 / 101-150).
SDR_ADE_OLD_NEW = """
SDR      37.4 24.8   40.9 23.8   28.9  7.4
SDR+MiB  37.5 25.5   42.9 25.5   28.9 11.7
"""


def _method_key(paper_method: str) -> str:
    name = paper_method.rstrip("†*")
    return METHOD_KEYS.get(name, name)


def _rows(text: str) -> list[tuple[str, list[Optional[float]]]]:
    rows = []
    for line in text.strip().splitlines():
        name, *cells = line.split()
        rows.append((name, [None if cell == "-" else float(cell) for cell in cells]))
    return rows


def _table(text: str, columns: list[tuple[str, str, str]], **common) -> list[Published]:
    """Records from a table in the paper's layout; `columns` gives (task, setting, cell) per number."""
    records = []
    for name, values in _rows(text):
        if len(values) != len(columns):
            raise ValueError(f"row {name}: {len(values)} numbers for {len(columns)} columns")
        cells: dict[tuple[str, str], dict[str, Optional[float]]] = {}
        for (task, setting, cell), value in zip(columns, values):
            cells.setdefault((task, setting), {})[cell] = value
        for (task, setting), found in cells.items():
            if all(value is None for value in found.values()):
                continue
            main = {cell: found.pop(cell, None) for cell in ("old", "new", "all", "avg")}
            records.append(Published(method=_method_key(name), task=task, setting=setting, paper_method=name,
                                     groups=tuple(found.items()), **main, **common))
    return records


def _amend(records: list[Published], match: dict, **changes) -> list[Published]:
    """Change the records matching every `match` item; notes are appended, cell marks merged."""
    def amended(record: Published) -> Published:
        if any(getattr(record, key) != value for key, value in match.items()):
            return record
        update = dict(changes)
        if record.note and "note" in update:
            update["note"] = f"{record.note}; {update['note']}"
        if "cell_status" in update:
            update["cell_status"] = tuple({**dict(record.cell_status), **dict(update["cell_status"])}.items())
        return replace(record, **update)
    matched = [record for record in records if all(getattr(record, k) == v for k, v in match.items())]
    if not matched:
        raise ValueError(f"no record matches {match}")
    return [amended(record) for record in records]


def _columns(pairs, cells) -> list[tuple[str, str, str]]:
    return [(task, setting, cell) for task, setting in pairs for cell in cells]


def _mib() -> list[Published]:
    records = _table(MIB_VOC, _columns(VOC_COLUMNS, ("old", "new", "all")), source="MiB", dataset="voc",
                     background="excluded", status="V-img", table="CVPR 2020, VOC table (voc-tab.png in fcdl94/MiB)")
    records = _amend(records, {"method": "mib", "task": "15-1"}, note="lambda_kd = 100 on 15-1")
    records = _amend(records, {"method": "PI", "task": "15-1", "setting": "overlapped"},
                     note="UCD Table 1 prints all = 0.4; the identity gives 0.45, so both are roundings")
    records += _table(MIB_ADE, [(task, "partition", cell) for task, cell in MIB_ADE_COLUMNS], source="MiB",
                      dataset="ade", background="excluded", status="V-img",
                      table="CVPR 2020, ADE20K table (ade-tab.png in fcdl94/MiB)",
                      note="MiB's fixed image partition; averages several class orders (PLOP#35)")
    return _amend(records, {"method": "joint", "dataset": "ade", "task": "50-50"},
                  flag="the 1-50 and 51-100 cells do not fit: they average 44.7, not the Joint 1-100 value 44.3, "
                       "and give all = 39.2, not 38.9")


def _plop() -> list[Published]:
    records = _table(PLOP_VOC, _columns([(t, "overlapped") for t in ("19-1", "15-5", "15-1")],
                                        ("old", "new", "all", "avg")),
                     source="PLOP", dataset="voc", background="included", status="V-img", rounding=0.01,
                     table="CVPR 2021, VOC table (images/plop_voc.png in arthurdouillard/CVPR2021_PLOP)")
    for name in ("EWC†", "LwF-MC†", "ILT†", "MiB†"):
        records = _amend(records, {"paper_method": name}, background="excluded", rounding=0.1,
                         note="copied from the MiB paper's overlapped columns: background excluded, "
                              "although printed under the 0-19 / 0-15 headers")
    records = _amend(records, {"method": "plop", "task": "15-5"},
                     flag="(16*75.73 + 5*51.71)/21 = 70.01, not 70.09 (70.09 is corroborated by PLOP#19): "
                          "an old/new cell is probably misprinted or mis-transcribed (old = 75.83 would fit)")
    records += _table(PLOP_VOC_10_1, [("10-1", "overlapped", cell) for cell in ("old", "new", "all")],
                      source="PLOP", dataset="voc", background="included", status="UNVERIFIED", rounding=0.01,
                      table="CVPR 2021, VOC 10-1 results",
                      note="PLOP's plop_10-1.sh trains the incremental steps for 10 epochs, not 30")
    records = _amend(records, {"method": "mib", "task": "10-1"}, cell_status={"all": "C: clovaai/SSUL README"})
    records = _amend(records, {"method": "plop", "task": "10-1"},
                     cell_status={"old": "C: PLOP#37", "all": "C: PLOP#37, clovaai/SSUL README"})
    records += _table(PLOP_ADE, _columns([(t, "overlapped") for t in PLOP_ADE_TASKS], ("old", "new", "all")),
                      source="PLOP", dataset="ade", background="included", status="UNVERIFIED (arith.)",
                      rounding=0.01, table="CVPR 2021, Table 2 (ADE20K)",
                      note="class order 'a', class 0 scored; the MiB rows are PLOP's overlapped re-runs, "
                           "not comparable to the MiB paper's ADE rows")
    for method, source in (("ilt", "C: zhangchbin/RCIL README"), ("mib", "C: clovaai/SSUL README"),
                           ("plop", "C: clovaai/SSUL README")):
        records = _amend(records, {"method": method, "dataset": "ade"}, cell_status={"all": source})
    return records


def _sdr() -> list[Published]:
    settings = {"S": "sequential", "D": "disjoint", "O": "overlapped"}
    charts = "CVPR 2021, results bar charts (img/poster.pdf, img/slides_static.pdf in LTTM/SDR)"
    records = _table(SDR_VOC_ALL, [(t, s, "all") for t in ("19-1", "15-5", "15-1") for s in SDR_VOC_SETTINGS],
                     source="SDR", dataset="voc", background="included", status="V-chart", table=charts)
    for baseline in ("ft", "lwf", "ilt", "CIL", "mib"):
        records = _amend(records, {"method": baseline}, note="re-run with SDR's recipe (lower incremental lr, "
                                                             "batch 8): compare with SDR's rows only")
    for line in SDR_VOC_OLD_NEW.strip().splitlines():
        task, code, *numbers = line.split()
        sequential = code == "S"
        for method, (old, new) in (("sdr", numbers[0:2]), ("mib+sdr", numbers[2:4])):
            mark = "2nd" if sequential else ("UNVERIFIED (arith.)" if method == "sdr"
                                             else "UNVERIFIED; identical to UCD Table 1's MiB+SDR row (V-img)")
            records = _amend(records, {"method": method, "task": task, "setting": settings[code]},
                             old=float(old), new=float(new), cell_status={"old": mark, "new": mark})
    records = _amend(records, {"method": "mib+sdr", "task": "15-1", "setting": "disjoint"},
                     note="CFSSeg labels 59.4 / 14.3 as SDR")
    cfsseg = "CFSSeg (MM 2025, arXiv 2412.10834), Table 3"
    for name, values in _rows(SDR_VOC_SEQUENTIAL):
        for task, (old, new, all_) in (("15-1", values[0:3]), ("15-5", values[3:6])):
            match = {"paper_method": name, "task": task, "setting": "sequential"}
            if name == "LwF-MC":  # not in the charts: every cell second-hand
                records.append(Published(source="SDR", method=_method_key(name), dataset="voc", task=task,
                                         setting="sequential", old=old, new=new, all=all_, background="included",
                                         status="2nd", table=cfsseg, paper_method=name,
                                         note="not in the charts; re-run with SDR's recipe"))
                continue
            if records[[r.paper_method == name and r.task == task and r.setting == "sequential"
                        for r in records].index(True)].all != all_:
                raise ValueError(f"SDR {name} {task} S: table 3 and chart disagree")
            records = _amend(records, match, old=old, new=new, cell_status={"old": "2nd", "new": "2nd"})
    records = _amend(records, {"method": "ilt", "task": "15-1", "setting": "sequential"},
                     flag="(16*49.2 + 5*30.3)/21 = 44.7, not 48.3: the second-hand old or new cell is wrong "
                          "(all matches the chart); do not use old/new")
    records.append(Published(source="SDR", method="sdr", dataset="voc", task="10-1", setting="disjoint", old=17.3,
                             new=11.0, all=14.3, background="included", status="2nd", paper_method="SDR",
                             table="CFSSeg (MM 2025, arXiv 2412.10834), Table 4", note="no chart to cross-check"))
    ade = _table(SDR_ADE_ALL, [(t, "partition", "all") for t in SDR_ADE_TASKS], source="SDR", dataset="ade",
                 background="excluded", status="V-chart", table=charts,
                 note="the charts do not name the image protocol; MiB-style ADE has one, the fixed partition")
    for name, values in _rows(SDR_ADE_OLD_NEW):
        mark = "UNVERIFIED" if name == "SDR" else "UNVERIFIED (lower confidence)"
        for index, task in enumerate(SDR_ADE_TASKS):
            ade = _amend(ade, {"paper_method": name, "task": task}, old=values[2 * index],
                         new=values[2 * index + 1], cell_status={"old": mark, "new": mark})
    ade = _amend(ade, {"method": "mib+sdr", "task": "50-50"},
                 note="new = 25.4 also circulates; only 25.5 gives all = 31.3")
    return records + ade


def _ucd() -> list[Published]:
    records = _table(UCD_VOC, _columns(VOC_COLUMNS, ("old", "new", "all")), source="UCD", dataset="voc",
                     background="excluded", status="V-img",
                     table="TPAMI 2022, Table 1 (image/result1.png in ygjwd12345/UCD; final print not checked)")
    records = _amend(records, {"method": "mib+sdr"}, background="included",
                     note="copied from the SDR paper, whose VOC numbers include background")
    records = _amend(records, {"paper_method": "PLOP*"},
                     note="UCD's re-implementation, background excluded: not the PLOP paper's quantity")
    return _amend(records, {"method": "PI", "task": "15-1", "setting": "overlapped"},
                  note="the MiB paper prints all = 0.5; the identity gives 0.45")


PUBLISHED: tuple[Published, ...] = tuple(_mib() + _plop() + _sdr() + _ucd())


def canonical_task(dataset: str, task: str) -> str:
    """The cslearn name of a task alias: MiB's "15-5s" -> "15-1", SDR's "10-10s" -> "10-1", ADE "50" -> "50-50"."""
    return NAMED_TASKS.get(dataset, {}).get(task, task)


def lookup(method: Optional[str] = None, dataset: Optional[str] = None, task: Optional[str] = None,
           setting: Optional[str] = None) -> list[Published]:
    """Published rows matching every given argument (None matches anything); method names are
    compared case-insensitively ("EWC" or "ewc") and task aliases are understood."""
    found = []
    for record in PUBLISHED:
        if ((method is None or record.method.casefold() == method.casefold())
                and (dataset is None or record.dataset == dataset)
                and (task is None or record.task == canonical_task(record.dataset, task))
                and (setting is None or record.setting == setting)):
            found.append(record)
    return found


def class_range(label: str) -> tuple[int, int]:
    """"101-110" -> (101, 110): a group of channels, both ends included."""
    first, last = label.split("-")
    return int(first), int(last)


def class_counts(record: Published) -> dict[str, int]:
    """How many classes each of the record's numbers averages: old (channel 0 only if the record
    includes background), new, and each group."""
    sizes = get_task(record.dataset, record.task).classes_per_step
    counts = {"old": sizes[0] - (0 if record.background == "included" else 1), "new": sum(sizes[1:])}
    for label, _ in record.groups:
        first, last = class_range(label)
        counts[label] = last - first + 1
    return counts


def weighted_all(record: Published) -> Optional[float]:
    """(n_old*old + n_new*new) / (n_old + n_new), over old and the groups when "new" is not
    printed (MiB's ADE 100-10 and 50-50); None when a number is missing."""
    counts, values = class_counts(record), record.values()
    parts = ["old", "new"] if record.new is not None else ["old", *[label for label, _ in record.groups]]
    if len(parts) < 2 or any(part not in values for part in parts):
        return None
    return sum(counts[part] * values[part] for part in parts) / sum(counts[part] for part in parts)


def fits_identity(record: Published) -> Optional[bool]:
    """Whether the printed "all" equals `weighted_all` within the print's rounding (None: cannot tell)."""
    expected = weighted_all(record)
    if expected is None or record.all is None:
        return None
    return abs(expected - record.all) <= record.rounding + 1e-9
