"""What the trainer and recipe command-line tests assert about a refusal."""
import pytest


def refused(main, argv) -> str:
    """``main(argv)`` refuses with one line (a SystemExit message); that line."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert isinstance(e.value.code, str) and "\n" not in e.value.code, e.value.code
    return e.value.code


def bad_argument(main, argv, capsys, flag) -> None:
    """argparse refuses ``flag``'s value: status 2, its message names the flag."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "Traceback" not in err, err
