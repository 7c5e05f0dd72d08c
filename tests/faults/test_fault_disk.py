"""A full disk (ENOSPC) and a permission denied (EACCES) at each write site of a grid: one line
naming the file, the error and the free space, exit 2; no good file is replaced by a partial
one, no temp file is left, and finished trials stay finished."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess

import pytest

import faultkit
from lib.runs import atomic_torch_save, atomic_write_text

TINY = [*faultkit.GRID, "--iterations", "2"]  # 3 trials of 2 steps: the writes, not the training
TRAINING_SITES = ["config.json", "checkpoint.pt", "final.pt", "mask.pt", "metrics.csv",
                  "result.json", "/done", "invocations/"]
REPORT_SITES = ["trials.csv", "curves.csv", "run.json", "table.md", "test_acc.png"]
ERRORS = [errno.ENOSPC, errno.EACCES]


def _files(base):
    return {p: p.read_bytes() for p in base.rglob("*") if p.is_file() and not p.name.endswith(".log")}


def _assert_one_line(res, site: str, err: int) -> None:
    assert res.code == 2 and "Traceback" not in res.output, res.output
    lines = res.stderr_lines
    assert len(lines) == 1, res.output
    line = lines[0]
    assert site.strip("/") in line and os.strerror(err) in line and "free there" in line, line
    assert errno.errorcode[err] in line and "rerun the same command" in line, line


def _no_temp_files(base) -> None:
    assert [p for p in base.rglob(".*") if p.is_file()] == []


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    base = tmp_path_factory.mktemp("finished")
    assert faultkit.run(base, TINY).code == 0
    return base


@pytest.mark.smoke
@pytest.mark.parametrize("err", ERRORS, ids=errno.errorcode.get)
@pytest.mark.parametrize("site", TRAINING_SITES)
def test_write_error_while_training(site, err, tmp_path):
    res = faultkit.run(tmp_path, TINY, fault={"site": site, "nth": 1, "action": str(err)})
    _assert_one_line(res, site, err)
    _no_temp_files(tmp_path)
    assert faultkit.intact(tmp_path) == []
    assert [p for p in tmp_path.rglob("*") if site in str(p) and p.is_file()] == []  # no partial file
    if site == "result.json" and err == errno.ENOSPC:  # space freed: the same command goes on
        done = faultkit.done_markers(tmp_path)
        res = faultkit.run(tmp_path, TINY)
        assert res.code == 0, res.output
        assert {p: t for p, t in faultkit.done_markers(tmp_path).items() if p in done} == done


@pytest.mark.smoke
@pytest.mark.parametrize("err", ERRORS, ids=errno.errorcode.get)
@pytest.mark.parametrize("site", REPORT_SITES)
def test_write_error_while_reporting_keeps_the_old_file(site, err, finished, tmp_path):
    shutil.copytree(finished, tmp_path, dirs_exist_ok=True)
    before = _files(tmp_path)
    res = faultkit.run(tmp_path, TINY, fault={"site": site, "nth": 1, "action": str(err)})
    _assert_one_line(res, site, err)
    _no_temp_files(tmp_path)
    after = _files(tmp_path)
    target = next(p for p in before if site in str(p))
    assert after[target] == before[target]  # the old file, whole
    assert {p for p in after if p.name == "done"} == {p for p in before if p.name == "done"}


def test_a_failed_write_never_replaces_the_old_file(tmp_path, monkeypatch):
    """The write fails half-way (the disk fills): the old file stays, no temp file is left, and
    the OSError names the file, not the temp file."""
    target = tmp_path / "result.json"
    atomic_write_text(target, "old")

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def write(self, data):
            self.f.write(bytes(data)[: len(data) // 2])
            self.f.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))
    for write in (lambda: atomic_write_text(target, "new" * 1000),
                  lambda: atomic_torch_save({"w": list(range(1000))}, target)):
        with pytest.raises(OSError) as e:
            write()
        assert e.value.errno == errno.ENOSPC and e.value.filename == str(target)
        assert target.read_text() == "old" and os.listdir(tmp_path) == ["result.json"]


def test_real_full_disk_on_a_tmpfs(tmp_path):
    """Where the test may mount (root, a kernel that allows it): a 64 KiB tmpfs, really full."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()})")
    try:
        atomic_write_text(mnt / "table.md", "old")
        with pytest.raises(OSError) as e:
            atomic_torch_save({"w": bytes(256 * 1024)}, mnt / "table.md")
        assert e.value.errno == errno.ENOSPC and e.value.filename == str(mnt / "table.md")
        assert (mnt / "table.md").read_text() == "old" and os.listdir(mnt) == ["table.md"]
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
