"""Files that appear under their final name complete or not at all, written once, in place.

Local paths (``pathlib.Path``, ``file://``): the file is written under a hidden temporary
sibling name (``.{name}.partial-{random}``) and renamed over the final name when complete.
A rename within one directory is atomic, so a reader never sees half a file.

Object stores (S3, GCS, Azure, fsspec memory, ...): there is no rename (fsspec's ``mv`` is a
server-side copy plus a delete, so every byte would be stored twice and a crash between the
two leaves litter). Instead each file is written *once, under its final key*, as an
uncommitted upload: the data is uploaded while it is written (S3: multipart upload parts,
several at a time; other stores: ``fs.open(path, "wb", autocommit=False)``), and the object
appears only on ``commit()`` (S3: ``CompleteMultipartUpload``); ``discard()`` aborts the
upload. A failed or killed run therefore leaves no object under the final name, and none
under any other name.
A file that stays smaller than one part is kept in memory and stored by one ``PUT`` at
commit (what s3fs does for small files too): one request for a small state record.

One module per concept, each imported by its own name (this package re-exports nothing):

- ``paths``: the path duck type, local or not, the temporary local names;
- ``atomic``: ``AtomicFile`` and ``atomic_writer``, which pick local rename or upload;
- ``uploads``: the uncommitted object-store upload (buffer, then S3 parts or an fsspec file);
- ``s3_parts``: S3's multipart upload with parts in flight while the next one fills;
- ``fsspec_uploads``: the other stores' fsspec files (Azure's commit-on-close, GCS);
- ``leftovers``: what killed earlier writers left (temporary files, S3 uploads);
- ``ndjson``: NDJSON record writers and a set of files committed together.

This package imports no Airflow.
"""
