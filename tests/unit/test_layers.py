"""Every SQL statement of the product lives in the data layer (activities/): the CLI and the
worker ask it, they hold none themselves. (The direction of imports is import-linter's, in
tests/test_code_quality.py.)"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent.parent
SQL = re.compile(r"""["'](?:SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM|WITH RECURSIVE)\b""")


def test_no_sql_outside_the_data_layer() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for folder in ("starter", "worker", "workflows")
        for path in sorted((ROOT / folder).glob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if SQL.search(line)
    ]
    assert found == [], found
