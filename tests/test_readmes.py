"""READMEs quote their results through include blocks (scripts/sync_readmes.py), never by hand."""
from __future__ import annotations

import sys

from cli import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import followups  # noqa: E402
import sync_readmes  # noqa: E402


def test_every_readme_include_is_up_to_date():
    stale = [r.name for r in sync_readmes.readmes() if sync_readmes.sync(r.read_text()) != r.read_text()]
    assert not stale, f"run `make readmes`: {stale}"


def test_every_followups_md_is_up_to_date(monkeypatch):
    # results/<experiment>/default/followups.md: what the follow-up runs' trials give today
    monkeypatch.chdir(ROOT)
    assert followups.write("default", check=True) == [], "run `make readmes`"


def test_an_include_expands_to_the_file_and_run_json_to_its_sentence(tmp_path, monkeypatch):
    (tmp_path / "results" / "x" / "default").mkdir(parents=True)
    (tmp_path / "results" / "x" / "default" / "claims.md").write_text("# Claims: x\n\n| a |\n")
    monkeypatch.setattr(sync_readmes, "ROOT", tmp_path)
    text = ("before\n<!-- include: results/x/default/claims.md -->\nold\n<!-- /include -->\n"
            "<!-- include: results/x/default/run.json -->\n<!-- /include -->\nafter\n")
    out = sync_readmes.sync(text)
    assert "| a |\n<!-- /include -->" in out and "old" not in out and "# Claims" not in out
    assert "not recorded (no run.json" in out and out.startswith("before\n") and out.endswith("after\n")
    assert sync_readmes.sync(out) == out


def test_an_included_files_sections_nest_under_the_readmes(tmp_path, monkeypatch):
    (tmp_path / "b.md").write_text("# Title\n\n## Part\n\ntext # not a heading\n### Sub\n")
    monkeypatch.setattr(sync_readmes, "ROOT", tmp_path)
    out = sync_readmes.render("b.md")
    assert out == "#### Part\n\ntext # not a heading\n##### Sub\n"
