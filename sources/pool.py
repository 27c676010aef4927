"""A pool that keeps growing, whatever it is made of: Parquet shards or an image folder.

Here, above both readers, so that neither imports the other: :mod:`~activestream.sources.shards`
knows Parquet, :mod:`~activestream.sources.imagefolder` builds on it for images.
"""

from __future__ import annotations

from activestream.config import StorageConfig
from activestream.sources.fs import DEFAULT_STORAGE
from activestream.sources.imagefolder import grow_image_folder
from activestream.sources.shards import ShardSet, grow_parquet_shards


def grow_shards(shards: ShardSet, storage: StorageConfig = DEFAULT_STORAGE) -> ShardSet | None:
    """The same set plus files that appeared under its URI since it was opened; None if none.

    Production pools keep growing: new shards land under the pool prefix while the service
    runs. Only the listing and the new files' footers are read, so calling this every round is
    cheap even with thousands of files on S3. Files that vanished are kept (their rows may be
    labeled already); new files must match the set's layout. An image folder
    (``kind="images"``) grows by new image files under its class sub-folders; a new class
    sub-folder holding images is refused.

    Raises:
        DataError: A new file is unreadable or has another layout (image column, ids, labels),
            or a new class folder appeared under an image folder.
    """
    if shards.images:
        return grow_image_folder(shards, storage)
    return grow_parquet_shards(shards, storage)
