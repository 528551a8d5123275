"""The one exception the data layer raises for bad or missing dataset files.

Where this sits: every loader in ``sgseg.data`` (VG, COCO, label spaces, statistics, the ``check`` CLI)
raises :class:`DatasetError` when a file is missing, unreadable or inconsistent. The message always names
the file (and key / image id) and says what to do, so the CLI can print it as one line without a traceback.
"""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset file is missing, corrupt or inconsistent; the message names the file and the fix."""
