"""A built wheel, not the checkout, carries everything the scripts read at run time (the drawing page):
evaluate and predict run from it in a folder with no checkout in sight."""

import subprocess
import sys

import pytest

from conftest import REPO, run_command


@pytest.mark.scripts
def test_evaluate_and_predict_from_the_wheel_in_another_folder(trained_checkpoint, real_root, tmp_path):
    wheels = tmp_path / "wheels"
    built = run_command([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                         "-w", wheels, REPO], timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("torch_mnist-*.whl")
    site = tmp_path / "site"
    installed = run_command([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", site,
                             wheel], timeout=300)
    assert installed.returncode == 0, installed.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    from PIL import Image
    Image.new("L", (60, 60), 255).save(elsewhere / "blank.png")
    program = (
        "import sys, torch_mnist\n"
        f"assert torch_mnist.__file__.startswith({str(site)!r}), torch_mnist.__file__\n"
        "from torch_mnist.commands.common import run_main\n"
        "from torch_mnist.commands import evaluate, predict\n"
        "from torch_mnist.deploy.serve import page\n"
        "from importlib import resources\n"
        "assert b'<canvas' in page()\n"
        f"assert run_main(evaluate.main, ['--checkpoint', {str(trained_checkpoint)!r}, '--data-dir', "
        f"{str(real_root)!r}, '--json']) == 0\n"
        f"sys.exit(run_main(predict.main, ['--checkpoint', {str(trained_checkpoint)!r}, 'blank.png']))\n")
    result = subprocess.run([sys.executable, "-c", program], cwd=elsewhere, capture_output=True, text=True,
                            timeout=300, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2, result.stderr  # the blank image: read through the wheel's preprocessing
    assert '"accuracy"' in result.stdout and "blank image: no ink found" in result.stderr
