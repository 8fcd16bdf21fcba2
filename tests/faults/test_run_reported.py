"""The one helper that turns what a command's work raises into one line and an exit code (m2hmx.cli.args)."""
import pytest

from m2hmx.cli.args import FAILURE, INTERRUPTED, USAGE, UsageError, run_reported


class Known(Exception):
    pass


def _raise(exc):
    def work():
        raise exc
    return work


@pytest.mark.parametrize("exc, code, line", [
    (UsageError("--out x: not writable\nmore"), USAGE, "prog: error: --out x: not writable"),
    (ValueError("a bad recipe value"), USAGE, "prog: error: a bad recipe value"),  # listed as usage
    (Known("corrupt frame 3"), FAILURE, "prog: error: corrupt frame 3"),  # listed as failure
    (ZeroDivisionError("division by zero"), FAILURE, "prog: error: ZeroDivisionError: division by zero"),
    (KeyboardInterrupt(), INTERRUPTED, "prog: interrupted; nothing written"),
])
def test_what_the_work_raises_becomes_one_line_and_its_exit_code(exc, code, line, capsys):
    got = run_reported("prog", _raise(exc), usage=(ValueError,), failure=(Known,),
                       interrupted="interrupted; nothing written")
    err = capsys.readouterr().err
    assert got == code and err == line + "\n"


def test_work_that_finishes_returns_its_code_or_zero(capsys):
    assert run_reported("prog", lambda: None) == 0 and run_reported("prog", lambda: 3) == 3
    assert capsys.readouterr().err == ""
