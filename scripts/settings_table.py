"""Rewrite the configuration table of README.md from the settings class (a test fails if stale)."""

from pathlib import Path

from streamfit.common.settings import Settings

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def render() -> str:
    rows = ["| environment | flag | for | default | meaning |", "| --- | --- | --- | --- | --- |"]
    for name, info in Settings.model_fields.items():
        env = "MLFLOW_TRACKING_URI" if name == "mlflow_tracking_uri" else f"STREAMFIT_{name.upper()}"
        default = "unset" if info.default is None else str(info.default)
        group = info.json_schema_extra["group"]  # type: ignore[index]
        flag = "--" + name.replace("_", "-")
        rows.append(f"| `{env}` | `{flag}` | {group} | `{default}` | {info.description} |")
    return "\n".join(rows)


def updated(text: str) -> str:
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{render()}\n{END}{tail}"


if __name__ == "__main__":
    README.write_text(updated(README.read_text()))
    print(f"updated {README}")
