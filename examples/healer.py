#!/usr/bin/env python3
"""Drop-in for the legacy healer.bash: ``healer.py <bucket-path> <host> <database> <coll>...``.

Every watched collection missing from DATABASE is "sick"; each is restored
from the newest of the three newest archives in ``<bucket-path>`` that holds
it (only its own bytes are fetched; it appears complete or not at all).
Exit 0 when nothing is sick afterwards, 1 otherwise, as before: "FATAL: no
backups found!" when there is no archive at all.

An installed mongosnap has this as the ``mongosnap-healer`` command, which a
crontab line should use (docs/operations.md): both run mongosnap/legacy.py,
whose ``heal()`` is a few lines around ``mongosnap.heal()``. Run this file
with the Python that has mongosnap installed.
"""

import sys

from mongosnap.legacy import healer_main

if __name__ == "__main__":
    sys.exit(healer_main())
