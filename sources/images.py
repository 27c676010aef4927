"""Encoded images (PNG, JPEG, ...) in a Parquet column, decoded where the model runs.

Two layouts are read: a plain ``binary`` column, and ``struct<bytes: binary, path: string>`` as
Hugging Face ``datasets`` writes its ``Image`` feature. Images may differ in size: each is
resized to the set's stored shape while decoding, and converted to its mode (``L`` or ``RGB``).
Decoding runs in the scorers and the trainer, never in the driver; a row that does not decode
(a truncated JPEG, a file that is not an image) is flagged, not fatal, so one bad file cannot
stop a pass over millions.

Example:
    >>> import io
    >>> import pyarrow as pa
    >>> from PIL import Image
    >>> def png(size, value):
    ...     buf = io.BytesIO()
    ...     Image.new("L", size, value).save(buf, format="PNG")
    ...     return buf.getvalue()
    >>> col = pa.array([png((4, 4), 255), b"not an image", png((8, 2), 0)], pa.binary())
    >>> x, ok = decode_images(col, (1, 4, 4))
    >>> x.shape, ok.tolist(), float(x[0].max()), float(x[2].max())
    ((3, 1, 4, 4), [True, False, True], 1.0, 0.0)
    >>> image_info(png((8, 2), 0))
    ('L', 2, 8, 'image/png')
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa

#: Pillow modes that are grayscale; everything else is read as RGB.
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


def is_encoded_type(t: pa.DataType) -> bool:
    """Whether a column of type ``t`` holds encoded images in one of the two layouts."""
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return True
    if pa.types.is_struct(t):
        names = [t.field(i).name for i in range(t.num_fields)]
        if "bytes" in names:
            inner = t.field("bytes").type
            return pa.types.is_binary(inner) or pa.types.is_large_binary(inner)
    return False


def encoded_bytes(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The bytes of each row, whichever layout the column uses."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_struct(array.type):
        return array.field("bytes")
    return array


def image_info(data: bytes) -> tuple[str, int, int, str]:
    """``(mode, height, width, media type)`` from an image's header, without decoding pixels."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        mode = "L" if img.mode in GRAYSCALE_MODES else "RGB"
        media = Image.MIME.get(img.format or "", "application/octet-stream")
        return mode, img.size[1], img.size[0], media


def decode_one(data: bytes | None, shape: tuple[int, int, int]) -> np.ndarray | None:
    """One image as uint8 ``(C, H, W)`` resized to ``shape``; None when it does not decode."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        return None
    c, h, w = shape
    try:
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert("L" if c == 1 else "RGB")
            if img.size != (w, h):
                img = img.resize((w, h), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return None  # truncated or corrupt data, or not an image at all
    return arr[None] if c == 1 else arr.transpose(2, 0, 1)


def decode_images(
    column: pa.Array | pa.ChunkedArray, shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Decode a column of encoded images into float32 ``(N, C, H, W)`` in [0, 1].

    Returns:
        ``(x, ok)``: rows that did not decode are zeros in ``x`` and False in ``ok``.
    """
    raw = encoded_bytes(column)
    n = len(raw)
    out = np.zeros((n, *shape), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    for i, data in enumerate(raw.to_pylist()):
        arr = decode_one(data, shape)
        if arr is not None:
            out[i] = arr
            ok[i] = True
    return np.divide(out, 255, dtype=np.float32), ok
