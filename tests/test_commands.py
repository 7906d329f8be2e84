"""The command line's common contract: instant --help, one error format, every default shown."""

import json
import shlex
import subprocess
import sys

import pytest

from torch_mnist.commands import (benchmark, convert, evaluate, export, plot, predict, prepare, reproduce, serve,
                                  train)
from torch_mnist.commands.common import Parser

from conftest import REPO, assert_one_line_error_in_process, run_command

COMMANDS = {"train": train, "evaluate": evaluate, "predict": predict, "plot": plot, "benchmark": benchmark,
            "reproduce": reproduce, "prepare_data": prepare, "serve": serve, "export": export, "convert": convert}

# In a fresh interpreter: the script's --help, then a bad flag, then which heavy modules got imported.
PROBE = """
import contextlib, io, json, runpy, sys
script = sys.argv[1]
codes = []
for argv in (["--help"], ["--no-such-flag"]):
    sys.argv = [script, *argv]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as e:
            codes.append([e.code, err.getvalue()])
print(json.dumps({"codes": codes, "heavy": sorted(m for m in ("torch", "torchvision", "numpy", "PIL")
                                                   if m in sys.modules)}))
"""


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_and_a_bad_flag_answer_without_importing_torch(name):
    result = run_command([sys.executable, "-c", PROBE, REPO / "scripts" / f"{name}.py"], timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    (help_code, _), (bad_code, bad_err) = report["codes"]
    assert help_code == 0 and bad_code == 2
    # (commands with required arguments name those first)
    assert bad_err.startswith("error: ") and bad_err.endswith(" (see --help)\n") and bad_err.count("\n") == 1
    assert report["heavy"] == []


@pytest.mark.parametrize("flags, message", [
    (["--lr", "abc"], "argument --lr: invalid float value: 'abc'"),
    (["--epochs", "1.5"], "argument --epochs: invalid int value: '1.5'"),
    (["--dataset", "cifar"], "argument --dataset: invalid choice: 'cifar'"),
    (["--hidden"], "argument --hidden: expected at least one argument"),
])
def test_flag_type_errors_are_one_line(flags, message, capsys, tmp_path):
    assert_one_line_error_in_process(train.main, [*flags, "--out", tmp_path / "c.pt"], capsys, message)
    assert not (tmp_path / "c.pt").exists()


def test_a_missing_required_flag_is_one_line(capsys):
    assert_one_line_error_in_process(prepare.main, ["--source", "x"], capsys,
                                     "the following arguments are required: --dataset")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_flag_says_its_default(name):
    parser = COMMANDS[name].parser()
    assert isinstance(parser, Parser)
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and ("default" in action.help or "required" in action.help), \
                f"{name} {action.option_strings[0]}: {action.help!r}"


def test_one_device_default_everywhere():
    defaults = {name: action.default for name, module in COMMANDS.items() for action in module.parser()._actions
                if action.dest == "device"}
    assert set(defaults.values()) == {"auto"} and "predict" in defaults


def test_export_formats_are_the_library_s():
    from torch_mnist.deploy.export import FORMATS
    assert export.FORMATS == FORMATS


def test_benchmark_variants_are_the_library_s():
    from torch_mnist.reports.benchmark import VARIANTS
    assert benchmark.VARIANTS == tuple(VARIANTS)


def test_benchmark_checks_its_output_before_measuring(synthetic_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("torch_mnist.reports.benchmark.run_benchmark", lambda *a, **k: pytest.fail("measured anyway"))
    assert_one_line_error_in_process(benchmark.main, ["--data-dir", synthetic_root, "--out",
                                                      tmp_path / "missing" / "dir" / "bench.json"], capsys,
                                     "--out", "does not exist")


@pytest.mark.parametrize("out_dir, message", [
    ("/proc/torch_mnist_runs", "--out-dir /proc/torch_mnist_runs: cannot be created"),
    ("/proc", "--out-dir /proc/summary.json: folder /proc is not writable"),  # exists, takes no files
])
def test_reproduce_checks_its_folder_before_the_first_run(synthetic_root, capsys, monkeypatch, out_dir, message):
    monkeypatch.setattr("torch_mnist.reports.reproduce.run_seeds", lambda *a, **k: pytest.fail("trained anyway"))
    assert_one_line_error_in_process(reproduce.main, ["--seeds", 2, "--data-dir", synthetic_root,
                                                      "--out-dir", out_dir], capsys, message)


@pytest.mark.scripts
def test_output_piped_into_head_ends_quietly(tmp_path, capsys):
    # evaluate.py's report is longer than what `head -1` reads: the rest meets a closed pipe
    from conftest import make_synthetic_root, run_in_process
    from torch_mnist.commands.train import main as train_main
    root = make_synthetic_root(tmp_path / "data")
    train = run_in_process(train_main, ["--epochs", 1, "--hidden", 8, "--data-dir", root, "--out", tmp_path / "c.pt",
                                        "--quiet", "--no-plots", "--no-compile"], capsys)
    assert train.returncode == 0, train.stderr
    command = (f"{shlex.quote(sys.executable)} {shlex.quote(str(REPO / 'scripts' / 'evaluate.py'))} --checkpoint "
               f"{shlex.quote(str(tmp_path / 'c.pt'))} --data-dir {shlex.quote(str(root))} | head -c 5")
    result = subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], capture_output=True, text=True, timeout=300)
    assert "Traceback" not in result.stderr and result.stderr == "", result.stderr


class TestInterruptions:
    """A signal that lands inside a C extension (an import, say) may surface as that library's own error."""

    def test_an_error_raised_by_an_interruption_is_the_interruption(self, capsys):
        from torch_mnist.commands.common import run_main

        def interrupted_in_an_import(argv):
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                raise TypeError("expected a message argument")  # as protobuf's import turned a Ctrl-C into

        assert run_main(interrupted_in_an_import, []) == 130
        assert capsys.readouterr().err == "interrupted\n"

    def test_an_error_after_our_sigterm_handler_ran_is_the_termination(self, capsys):
        from torch_mnist.commands.common import Terminated, raise_terminated, run_main

        def terminated_and_lost(argv):
            try:
                raise_terminated(15, None)
            except Terminated:
                pass  # a C extension that swallowed it ...
            raise TypeError("expected a message argument")  # ... and failed without saying why

        assert run_main(terminated_and_lost, []) == 143
        assert capsys.readouterr().err == "interrupted\n"

    def test_any_other_error_is_a_bug_and_keeps_its_traceback(self):
        from torch_mnist.commands.common import run_main

        def broken(argv):
            raise TypeError("a bug")

        with pytest.raises(TypeError, match="a bug"):
            run_main(broken, [])
