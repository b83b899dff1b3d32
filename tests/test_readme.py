"""README's two commands are the ones CI runs, and its links resolve."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CI = (ROOT / ".ci" / "run").read_text()


def ci_commands():
    return [line.strip() for line in CI.splitlines() if line.strip().startswith("python -m ")]


def test_ci_runs_readme_install_and_test_commands():
    install, torch_extra, test = ci_commands()
    assert install == 'python -m pip install -e ".[dev]"'
    assert install in README
    assert re.search(rf"^{re.escape(test)}$", README, re.M), "README's test command is CI's"
    # CI adds the torch extra (the CPU build), the notebooks and docs extras, and requires the
    # cross-checks and the site's browser tests to run
    assert torch_extra.startswith("python -m pip install") and '".[torch,notebooks,docs]"' in torch_extra
    assert 'python -m pip install -e ".[torch]"' in README
    assert "NPVAE_REQUIRE_TORCH=1" in CI and "NPVAE_REQUIRE_SITE=1" in CI
    assert "python tutorials/site/build.py" in CI and "python tutorials/site/build.py" in README


def test_readme_links_and_images_exist():
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    missing = [t for t in targets if not t.startswith("http") and not (ROOT / t).exists()]
    assert targets and not missing, missing


def test_readme_training_loop_runs_and_prints_what_readme_shows(capsys):
    """The ``fit`` example of README, run as it stands; its two lines are the ones shown."""
    block = re.search(r"## The training loop, in your own code.*?```python\n(.*?)```", README,
                      re.S).group(1)
    exec(compile(block, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and all(line in README for line in printed), printed
