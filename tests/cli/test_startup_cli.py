"""The start-up shortcuts of the command line (issue 16) change nothing a user sees:
plain values coerce exactly as typer's own adapters coerce them, and a command run alone
behaves as in the whole tree (aliases, the alias command, unknown names, --help)."""

from __future__ import annotations

import pytest
from typer import _coercion
from typer._click.exceptions import BadParameter
from typer.models import OptionInfo

from coralfs.cli.main import build_command, invoked_name, main
from coralfs.cli.plain_params import PlainRuntimeParam, _plain_kind

VALUES = ["5", "-5", "007", " 5", "5.0", "1e3", "", "abc", "x" * 40, "12345678901234567890", 5, 5.0, True,
          False, None, [], ["a", "b"], ("a",), [1, "a"], b"bytes"]


def outcome(rp, value):
    try:
        return ("ok", rp._coerce_value(value, param=None, ctx=None))
    except BadParameter as e:
        return ("error", e.message)


@pytest.mark.parametrize("annotation", [str, int, float, bool, list[str]])
def test_plain_params_coerce_exactly_as_typer_does(annotation):
    desc = _coercion.resolve_type_descriptor(annotation, OptionInfo())
    assert _plain_kind(desc) is annotation
    plain = PlainRuntimeParam(parameter_info=desc.parameter_info, annotation=annotation, descriptor=desc)
    real = _coercion.build_runtime_param(desc)
    for value in VALUES:
        if annotation is list[str] and not isinstance(value, (list, tuple)):
            continue   # typer hands a multiple option's coercion a sequence
        got, want = outcome(plain, value), outcome(real, value)
        assert got == want, (annotation, value)
        assert type(got[1]) is type(want[1]), (annotation, value)


def test_constrained_and_other_params_keep_typer_adapters():
    for annotation, info in [(int, OptionInfo(min=1)), (str, OptionInfo(parser=str.upper))]:
        assert _plain_kind(_coercion.resolve_type_descriptor(annotation, info)) is None
    import pathlib
    assert _plain_kind(_coercion.resolve_type_descriptor(pathlib.Path, OptionInfo())) is None


def test_invoked_name_skips_root_options_only():
    assert invoked_name(["log", "-n", "3"]) == "log"
    assert invoked_name(["-R", "/r", "-v", "-c", "k=v", "status"]) == "status"
    assert invoked_name(["--repo=/r", "--config=a=b", "branch"]) == "branch"
    assert invoked_name(["--help"]) is None
    assert invoked_name(["-x", "log"]) is None
    assert invoked_name([]) is None


def test_a_named_command_is_built_alone_and_everything_else_whole():
    assert set(build_command(["log", "--oneline"]).commands) == {"log"}
    assert set(build_command(["remote", "list"]).commands) == {"remote"}
    whole = set(build_command(["--help"]).commands)
    assert {"log", "status", "remote", "experiment", "save"} <= whole
    assert set(build_command(["save"]).commands) == whole        # an alias may redefine it
    assert set(build_command(["no-such"]).commands) == whole     # aliases, custom commands, typos
    assert set(build_command(["log"]).commands) == {"log"}
    assert set(build_command([]).commands) == whole


def test_aliases_and_the_alias_command_work_through_main(tmp_path, capsys):
    repo = str(tmp_path / "r")
    assert main(["init", repo]) == 0
    assert main(["-R", repo, "alias", "hist", "log --oneline"]) == 0
    assert main(["-R", repo, "alias", "log", "status"]) == 1     # the whole tree is checked
    assert "log is a coralfs command" in capsys.readouterr().err
    (tmp_path / "a.txt").write_text("a\n")
    assert main(["-R", repo, "commit", str(tmp_path / "a.txt"), "-m", "one"]) == 0
    capsys.readouterr()
    assert main(["-R", repo, "hist"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("one")
    assert main(["-R", repo, "lgo"]) == 2
    assert "Did you mean 'log'?" in capsys.readouterr().err
