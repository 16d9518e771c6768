"""Published results (MiB, PLOP, SDR, UCD) and how runs compare with them.

- `published`: `PUBLISHED`, every number of the papers' tables with its provenance, background
  convention, verification mark and flags; `lookup`; the weighted-mean identity that checks them.
- `compare`: one run's final numbers beside the published rows, in each row's convention
  (`comparison.json` / `comparison.csv` in the run directory).
- `report`: many runs grouped by seed, mean ± std, a table, a CSV and a per-step plot
  (`python -m cslearn report`).
"""
from cslearn.results.compare import compare, format_comparison, run_setting, write_comparison
from cslearn.results.published import (PUBLISHED, Published, class_counts, fits_identity, lookup,
                                       weighted_all)
from cslearn.results.report import format_report, group_runs, load_run, plot_report, write_report_csv

__all__ = ["PUBLISHED", "Published", "class_counts", "compare", "fits_identity", "format_comparison",
           "format_report", "group_runs", "load_run", "lookup", "plot_report", "run_setting", "weighted_all",
           "write_comparison", "write_report_csv"]
