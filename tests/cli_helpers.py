"""Running the command line in-process and checking its one-line errors (shared by the CLI tests)."""

from __future__ import annotations

from vectorpose.cli import main


def run(args: list, capsys) -> tuple[int, str, str]:
    """``vectorpose ARGS`` in this process: ``(exit code, stdout, stderr)``."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    """A non-zero exit with exactly one ``error:`` line on stderr, no traceback, holding each needle."""
    lines = err.strip().splitlines()
    assert code != 0
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
