"""rich is loaded only when a progress table is drawn (mongosnap.display)."""

from __future__ import annotations

import subprocess
import sys

CHECK = (
    "import sys\n"
    "from mongosnap.display import progress_display\n"
    "from mongosnap.progress import Progress, Stage\n"
    "with progress_display(enabled={enabled}) as report:\n"
    "    report(Progress(Stage.STARTED, 'db', 'c', 0, 0, None, None))\n"
    "print('rich' in sys.modules)\n"
)


def rich_loaded(*, enabled: bool) -> bool:
    done = subprocess.run(
        [sys.executable, "-c", CHECK.format(enabled=enabled)],
        capture_output=True,
        text=True,
        check=True,
    )
    return {"True": True, "False": False}[done.stdout.strip()]


def test_no_table_no_rich() -> None:
    assert not rich_loaded(enabled=False)


def test_a_table_loads_rich() -> None:
    assert rich_loaded(enabled=True)
