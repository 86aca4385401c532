"""The deployed package: what infra/deploy.sh zips (and .funcignore leaves for `func` publishing) is the
runtime app alone, and the app indexes from it alone: no demo API, no Azurite launcher, no tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from fanout.azurite import PROJECT_ROOT

TOOLING = {"fanout", "testkit", "tests", "benchmarks", "infra", "docs", "node_modules"}


def zipped_paths() -> list[str]:
    script = (PROJECT_ROOT / "infra" / "deploy.sh").read_text()
    (line,) = re.findall(r'python3 -m zipfile -c "\$package" (.+)', script)
    return line.split()


def test_the_zip_holds_the_runtime_packages_and_no_tooling():
    paths = zipped_paths()
    assert set(paths) == {"function_app.py", "host.json", "requirements.txt", "core", "putmessage", "chunking",
                          "ingestion", "runs", "api"}  # fmt: skip
    assert not TOOLING & set(paths)
    ignored = set((PROJECT_ROOT / ".funcignore").read_text().split())
    assert {"fanout", "testkit", "tests", "benchmarks"} <= ignored


def test_the_app_indexes_from_the_zip_alone(tmp_path: Path):
    package = tmp_path / "app.zip"
    subprocess.run([sys.executable, "-m", "zipfile", "-c", str(package), *zipped_paths()], cwd=PROJECT_ROOT,
                   check=True)  # fmt: skip
    deployed = tmp_path / "wwwroot"
    with zipfile.ZipFile(package) as archive:
        archive.extractall(deployed)
        names = archive.namelist()
    assert not [name for name in names if re.search(r"azurite|demo_api|testkit|(^|/)tests?/", name)]
    assert "api/dashboard.html" in names  # the dashboard's page ships with the app
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    listing = subprocess.run(
        [sys.executable, "-c", "import json, function_app; print(json.dumps(sorted("
         "f.get_function_name() for f in function_app.app.get_functions())))"],
        cwd=deployed, env=env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert json.loads(listing.stdout) == [
        "cancel_ingestion", "continue_chunking", "dashboard", "delete_ingestion", "get_ingestion_chunks",
        "get_ingestion_status", "ingest_chunk", "list_ingestions", "openapi", "redrive_chunk", "redrive_ingestion",
        "start_ingestion", "sweep_stalled_chunks",
    ]  # fmt: skip
