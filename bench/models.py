"""msgspec or pydantic for the admin API's types (simulacra/models.py): what each costs.

    python -m bench.models            # needs pydantic: pip install pydantic

Both convert the same stub documents (a small one and one with a 64 KB body and 20
matchers) to equivalent types that refuse unknown keys, from parsed JSON (what the
handlers do) and from the raw bytes; and each library's import is timed in a fresh
interpreter. Prints the medians of ``--repeats`` rounds, and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from simulacra.models import StubDocument, convert

SMALL = {
    "request": {
        "method": "POST",
        "urlPath": "/orders",
        "bodyPatterns": {"contains": ["<id>1</id>"]},
    },
    "response": {"status": 200, "body": "<ok/>", "headers": {"Content-Type": "text/xml"}},
    "priority": 1,
}
LARGE = {
    "request": {
        "method": "POST",
        "urlPath": "/orders",
        "headers": {f"x-h{i}": {"equalTo": str(i)} for i in range(10)},
        "bodyPatterns": {"contains": [f"<id>{i}</id>" for i in range(10)]},
    },
    "responses": [
        {"status": 200, "body": "x" * 65536, "headers": {"Content-Type": "text/plain"}},
        {"status": 503, "fault": "EMPTY_RESPONSE"},
    ],
}


def pydantic_types() -> Any:
    """The same shape as simulacra.models.StubDocument, in pydantic (extra keys forbidden)."""
    from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")

    class Dribble(Strict):
        numberOfChunks: int
        totalDuration: int

    class StubResponse(Strict):
        status: int | str | None = None
        body: Any = None
        base64Body: str | None = None
        headers: dict[str, str | list[str] | int | float | bool] | None = None
        delayPolicy: str | None = None
        fault: str | None = None
        chunkedDribbleDelay: Dribble | None = None

    class Stub(Strict):
        request: dict[str, Any]
        response: StubResponse | None = None
        responses: list[StubResponse] | None = Field(default=None)
        priority: int | str | None = None
        args: dict[str, str | int | float | bool] | None = None
        recorded: str | int | None = None

    return Stub, TypeAdapter(Stub)


def per_call_us(work: Callable[[], object], seconds: float = 0.3) -> float:
    calls = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(100):
            work()
        calls += 100
    return elapsed / calls * 1e6


def import_ms(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    try:
        stub, adapter = pydantic_types()
    except ImportError:
        print("pydantic is not installed: pip install pydantic", file=sys.stderr)
        return 2
    rows: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for label, doc in (("small", SMALL), ("64 KB", LARGE)):
            raw = orjson.dumps(doc)
            measured = {
                f"{label}: msgspec, parsed JSON": lambda d=doc: convert(d, StubDocument),
                f"{label}: pydantic, parsed JSON": lambda d=doc: stub.model_validate(d),
                f"{label}: msgspec, bytes": lambda r=raw: __import__("msgspec").json.decode(
                    r, type=StubDocument
                ),
                f"{label}: pydantic, bytes": lambda r=raw: adapter.validate_json(r),
            }
            for name, work in measured.items():
                rows.setdefault(name, []).append(per_call_us(work))
        rows.setdefault("import: msgspec (ms)", []).append(import_ms("msgspec"))
        rows.setdefault("import: pydantic (ms)", []).append(import_ms("pydantic"))
    medians = {name: statistics.median(values) for name, values in rows.items()}
    print(f"{'conversion':34} {'median':>10}  pydantic/msgspec")
    for name, value in medians.items():
        unit = "" if "(ms)" in name else " us"
        ratio = ""
        if "msgspec" in name:
            other = medians[name.replace("msgspec", "pydantic")]
            ratio = f"{other / value:.1f}x"
        print(f"{name:34} {value:9.2f}{unit:3} {ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
