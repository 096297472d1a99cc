"""Rebuild common/data/adult_*.csv.gz from the original UCI files (../shared/datasets/adult).

Only the format changes: a header row is added, the test split's comment line and the trailing
'.' on its labels are dropped, and '?' becomes an empty cell (a missing value).
Usage: python scripts/ship_adult_data.py [SOURCE_DIR]
"""

import csv
import gzip
import sys
from pathlib import Path

COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education_num", "marital_status",
    "occupation", "relationship", "race", "sex", "capital_gain", "capital_loss",
    "hours_per_week", "native_country", "income",
]  # fmt: skip


def main() -> None:
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets/adult")
    target = Path(__file__).resolve().parent.parent / "common" / "data"
    for src, dst in [("adult.data", "adult_train.csv.gz"), ("adult.test", "adult_test.csv.gz")]:
        with (source / src).open() as f, gzip.open(target / dst, "wt", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(COLUMNS)
            for line in f:
                if line.startswith("|") or not line.strip():
                    continue
                row = [cell.strip() for cell in line.strip().split(",")]
                row[-1] = row[-1].rstrip(".")
                writer.writerow(["" if cell == "?" else cell for cell in row])


if __name__ == "__main__":
    main()
