"""Data sources: every pool, bundled or user-supplied, is read as one normalized row layout.

Pools are Parquet shards, or folders of class sub-folders of images read in place; readers give
both as ``id``, image column and ``label`` rows (see
:class:`~activestream.sources.shards.ShardSet`).

One module a job, so each caller depends on what it uses:

* :mod:`~activestream.sources.fs`: local or ``s3://`` filesystems (all the label log needs);
* :mod:`~activestream.sources.shards`: the shard schema, validation from footers, reading;
* :mod:`~activestream.sources.writing`: writing shards;
* :mod:`~activestream.sources.digits`: the bundled digits;
* :mod:`~activestream.sources.imagefolder`: class-per-folder image trees, read in place;
* :mod:`~activestream.sources.synthetic`: synthetic gratings of any size;
* :mod:`~activestream.sources.resolve`: the configured data set as pool and test shards.

Nothing is imported here, so importing one of them never loads the others.
"""
