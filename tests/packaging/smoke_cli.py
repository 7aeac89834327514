"""The cli extra: the ``tidings`` command is installed and reads a log."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import tidings

command = Path(sys.executable).parent / "tidings"
with tempfile.TemporaryDirectory() as directory:
    url = f"sqlite:///{directory}/events.db"
    with tidings.Bus(store=url) as bus:
        bus.publish({"order_id": "o1"}, topic="orders.placed")
        bus.publish({"order_id": "o2"}, topic="orders.placed")
    shown = subprocess.run(
        [command, "log", "read", "--store", url, "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert shown.stdout.count('"orders.placed"') == 2, shown.stdout
    verified = subprocess.run(
        [command, "log", "verify", "--store", url], capture_output=True, check=False, timeout=60
    )
    assert verified.returncode == 0, verified
print("ok")
