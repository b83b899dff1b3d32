"""README's two commands are the ones CI runs, and its links resolve."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CI = (ROOT / ".ci" / "run").read_text()


def ci_commands():
    return [line.strip() for line in CI.splitlines() if line.strip().startswith("python -m ")]


def test_ci_runs_readme_install_and_test_commands():
    install, test = ci_commands()
    assert install == 'python -m pip install -e ".[dev]"'
    assert install in README
    assert re.search(rf"^{re.escape(test)}$", README, re.M), "README's test command is CI's"


def test_readme_links_and_images_exist():
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    missing = [t for t in targets if not t.startswith("http") and not (ROOT / t).exists()]
    assert targets and not missing, missing
