"""Write the JSON Schema of every message to docs/schemas/ (tests fail when they are stale)."""

import json
from pathlib import Path

from streamfit.common.messages import json_schemas

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"


def render() -> dict[str, str]:
    return {
        f"{name}.schema.json": json.dumps(schema, indent=2, sort_keys=True) + "\n"
        for name, schema in json_schemas().items()
    }


if __name__ == "__main__":
    SCHEMA_DIR.mkdir(parents=True, exist_ok=True)
    for filename, text in render().items():
        (SCHEMA_DIR / filename).write_text(text)
        print(f"wrote {SCHEMA_DIR / filename}")
