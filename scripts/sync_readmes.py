"""Copy generated results into the READMEs, so a README quotes its results and never drifts.

    python scripts/sync_readmes.py [--check]

In any README.md, a block

    <!-- include: results/<experiment>/<scale>/claims.md -->
    ...
    <!-- /include -->

is replaced by that file (its first heading dropped, the others two levels deeper); for a `run.json` it is the sentence that
names the command, wall time and machine of the invocations that produced the results. `--check`
changes nothing and exits 1 when a README is out of date (the test suite runs it).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.provenance import footer_line, read  # noqa: E402

BLOCK = re.compile(r"(<!-- include: (?P<path>[^ ]+) -->\n)(?P<body>.*?)(<!-- /include -->)", re.S)


def render(path: str) -> str:
    """What an include of `path` (relative to the repository) expands to."""
    file = ROOT / path
    if file.name == "run.json":
        return footer_line(read(file.parent)) + "\n"
    if not file.exists():
        return f"(`{path}` is not there yet: run the experiment to make it.)\n"
    text = re.sub(r"\A# [^\n]*\n+", "", file.read_text())  # the README has its own heading
    return re.sub(r"^(#+) ", r"\1## ", text, flags=re.M)  # its sections nest under the README's


def sync(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("path")) + m.group(4), text)


def readmes() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "experiments").glob("*/README.md"))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only report READMEs that are out of date")
    a = p.parse_args(argv)
    stale = []
    for readme in readmes():
        text = readme.read_text()
        new = sync(text)
        if new != text:
            stale.append(readme.relative_to(ROOT))
            if not a.check:
                readme.write_text(new)
    if a.check and stale:
        print("out of date (run `make readmes`): " + ", ".join(map(str, stale)))
        return 1
    print(f"{'checked' if a.check else 'synced'} {len(readmes())} READMEs"
          + (f"; updated {', '.join(map(str, stale))}" if stale and not a.check else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
