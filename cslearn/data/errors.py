"""The one exception raised for a dataset that cannot be used as it is on disk.

Every reader, the index loader and the dataset check raise `DatasetError` with a message that says
what is wrong, where (the path) and how to fix it, so that a wrong ``--root`` or a half-extracted
archive is diagnosed in one read instead of through a stack trace deep inside a DataLoader worker.
"""

from __future__ import annotations

DOWNLOAD_HINT = "download with `python -m cslearn data download {dataset} --root DIR` or see data/README.md"
CHECK_HINT = "run `python -m cslearn data check --dataset {dataset} --root DIR` to list every problem"


class DatasetError(ValueError):
    """A dataset on disk has the wrong layout, a missing or corrupt file, or out-of-range values.

    It subclasses `ValueError` so that callers catching bad values keep working.
    """
