"""``streamfit predictor``'s command line: its flags, and how it takes signals."""

from __future__ import annotations

import pytest

from streamfit.cli import build_parser


def test_help_lists_the_predictor_settings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["predictor", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--group-id", "--replica-id", "--batch-size", "--batch-timeout-ms", "--retrain-every",
                 "--pending-max-age", "--metrics-port", "--processing-guarantee", "--bootstrap-servers"):  # fmt: skip
        assert flag in text, flag
