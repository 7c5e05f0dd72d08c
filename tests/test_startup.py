"""Start-up that costs nothing: an experiment's command line is parsed without importing the
report libraries (pandas, seaborn, matplotlib: they load when the report is written) or wandb
(it starts on its own thread with the first trial)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("pandas", "seaborn", "matplotlib", "wandb")

CHECK = f"""
import contextlib, importlib, io, sys
from pathlib import Path
mains = sorted(Path("experiments").glob("*/__main__.py"))
for main in mains:
    module = importlib.import_module(f"experiments.{{main.parent.name}}.__main__")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        module.EXPERIMENT.main(["--help"])
print(len(mains), sorted(m for m in {HEAVY!r} if m in sys.modules))
"""


def test_experiment_help_imports_no_report_library_nor_wandb():
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    count, heavy = out.split(" ", 1)
    assert int(count) >= 10 and heavy.strip() == "[]", out
