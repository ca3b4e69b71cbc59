"""The age CLI that scripts/testbed.py builds, for the interoperability tests
(a module of its own: ``conftest`` names more than one module in this tree)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AgeCli:
    """age v1.3.2 (age, age-keygen, age-plugin-batchpass) in the test bed cache."""

    directory: Path

    def run(self, *args: str, data: bytes = b"", passphrase: str | None = None) -> bytes:
        env = {**os.environ, "PATH": f"{self.directory}{os.pathsep}{os.environ['PATH']}"}
        if passphrase is not None:
            env["AGE_PASSPHRASE"] = passphrase
            env["AGE_PASSPHRASE_WORK_FACTOR"] = "10"  # seconds of scrypt would be wasted here
        proc = subprocess.run(
            [str(self.directory / args[0]), *args[1:]],
            input=data,
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        return proc.stdout
