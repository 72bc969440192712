"""The CLI's refusal, as the tests check it: exit code 2 and one line on stderr, `fastgrok: error: …`."""
from fastgrok.cli import main


def one_line_error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, (code, err)
    assert err.startswith("fastgrok: error: ") and err.count("\n") == 1, err
    return err
