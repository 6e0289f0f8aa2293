from __future__ import annotations

from pathlib import Path

import pytest

from core.cli import main


def test_set_get_list_unset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = ["--db", f"sqlite:///{tmp_path / 'env.db'}"]
    assert main(["env", "set", "REGION", "eu", *db]) == 0
    assert main(["env", "set", "API_KEY", "s3cret", "--secret", *db]) == 0
    assert capsys.readouterr().err == "set REGION\nset API_KEY (secret)\n"
    assert main(["env", "get", "API_KEY", *db]) == 0
    assert capsys.readouterr().out == "s3cret\n"
    assert main(["env", "list", *db]) == 0
    assert capsys.readouterr().out == "API_KEY=********\nREGION=eu\n"
    assert main(["env", "list", "--show-secrets", *db]) == 0
    assert capsys.readouterr().out == "API_KEY=s3cret\nREGION=eu\n"
    assert main(["env", "set", "REGION", "us", *db]) == 0
    assert main(["env", "unset", "API_KEY", *db]) == 0
    capsys.readouterr()
    assert main(["env", "list", *db]) == 0
    assert capsys.readouterr().out == "REGION=us\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["get", "MISSING"], '"MISSING" is not set; set it with capsule env set.'),
        (["unset", "MISSING"], '"MISSING" is not set.'),
        (
            ["set", "9LIVES", "x"],
            "'9LIVES' is not a variable name; use letters, digits and _ (not first a digit).",
        ),
    ],
)
def test_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["env", *argv, "--db", f"sqlite:///{tmp_path / 'env.db'}"]) == 1
    assert capsys.readouterr().err == f"error: {message}\n"
