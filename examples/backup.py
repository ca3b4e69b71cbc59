#!/usr/bin/env python3
"""Drop-in for the legacy backup.bash: ``backup.py <bucket-path> <host[:port]> <database>``.

Dumps DATABASE from HOST into ``<bucket-path>`` (``s3://bucket[/prefix]`` or a
directory) as ``<time>-mongodb-dump.tar.gz``, streaming: no local dump, no
tarball on disk. S3 credentials and endpoint come from the standard AWS
variables and files. Exit 0 on success, 1 on any failure, as before.

An installed mongosnap has this as the ``mongosnap-backup`` command, which a
crontab line should use (docs/operations.md): both run mongosnap/legacy.py,
whose ``backup()`` is a dozen lines around ``mongosnap.backup()``. Run this file
with the Python that has mongosnap installed (``/opt/mongosnap/bin/python
backup.py ...``, or directly with that venv active).
"""

import sys

from mongosnap.legacy import backup_main

if __name__ == "__main__":
    sys.exit(backup_main())
