"""The function app as the host indexes it: `app.get_functions()` in a fresh process per setting.

Run as a module it prints each function's bindings as JSON (get_functions may be called once per app
object, so every setting gets a process of its own).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from fanout.azurite import PROJECT_ROOT


def indexed_functions(**env: str) -> dict[str, list[dict]]:
    clean = {k: v for k, v in os.environ.items() if k not in ("BLOB_TRIGGER_SOURCE", "CHUNK_CONTAINER")}
    result = subprocess.run(
        [sys.executable, "-m", "testkit.indexed_functions"], cwd=PROJECT_ROOT, env={**clean, **env},
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return json.loads(result.stdout)


def main() -> None:
    import function_app

    print(json.dumps({f.get_function_name(): json.loads(f.get_function_json())["bindings"]
                      for f in function_app.app.get_functions()}))  # fmt: skip


if __name__ == "__main__":
    main()
