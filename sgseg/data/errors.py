"""The one exception the data layer raises for bad or missing dataset files.

Where this sits: every loader in ``sgseg.data`` (VG, COCO, label spaces, statistics, the ``check`` CLI)
raises :class:`DatasetError` when a file is missing, unreadable or inconsistent. The message always names
the file (and key / image id) and says what to do, so the CLI can print it as one line without a traceback.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor


class DatasetError(ValueError):
    """A dataset file is missing, corrupt or inconsistent; the message names the file and the fix."""


def read_rgb(path: Path, what: str, image_id: int, missing_hint: str) -> Tensor:
    """Uint8[3, H, W] RGB pixels of an image file (no EXIF rotation, like the reference's PIL loading).

    what: how errors name the file ("VG image file"); missing_hint: what to do when it is absent. A missing
    or undecodable file raises :class:`DatasetError` naming the path and the image id.
    """
    from torchvision.io import ImageReadMode, decode_image

    if not path.is_file():
        raise DatasetError(f"{what} missing: {path} (image id {image_id}); {missing_hint}")
    try:
        return decode_image(str(path), mode=ImageReadMode.RGB)
    except (RuntimeError, OSError, ValueError) as e:
        raise DatasetError(
            f"{what} {path} (image id {image_id}) cannot be decoded ({e}); download it again"
        ) from e
