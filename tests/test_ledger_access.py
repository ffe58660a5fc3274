"""The ledger's file as the system has it: a read-only disk, a file that is not a ledger, the
mode of every file SQLite keeps (issue 11 #13). Real mounts, real files."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import remount

from importer.errors import LedgerError
from importer.ledger import Ledger


def _mode(path: Path) -> str:
    return oct(path.stat().st_mode & 0o777)


def test_a_ledger_on_a_read_only_file_system_is_diagnosed_as_such(
    tmpfs: Callable[..., Path],
) -> None:
    disk = tmpfs("state")
    path = disk / "state.db"
    with Ledger(path) as ledger:
        ledger.begin_run("customers", "r1", "c", [])
    before = path.read_bytes()
    remount(disk, "ro")
    with pytest.raises(LedgerError) as exc:
        Ledger(path)
    assert str(exc.value) == (
        f"ledger {path} is on a read-only file system; it was left untouched. Remount it "
        "read-write, or set state.path to a file on a writable disk"
    )
    assert exc.value.exit_code == 2
    assert path.read_bytes() == before


def test_a_new_ledger_on_a_read_only_file_system_names_the_cause(
    tmpfs: Callable[..., Path],
) -> None:
    disk = tmpfs("state")
    remount(disk, "ro")
    with pytest.raises(LedgerError) as exc:
        Ledger(disk / "state.db")
    assert str(exc.value) == (
        f"cannot create ledger {disk / 'state.db'}: Read-only file system; Remount it "
        "read-write, or set state.path to a file on a writable disk"
    )


def test_an_unwritable_ledger_is_a_permission_problem_not_a_damaged_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    with Ledger(path) as ledger:
        ledger.begin_run("customers", "r1", "c", [])
    # immutable: even root cannot write it (chmod does not stop root)
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        with pytest.raises(LedgerError) as exc:
            Ledger(path)
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    assert str(exc.value) == (
        f"ledger {path}: {path} cannot be read and written by this user (uid {os.geteuid()}): "
        "permission denied; it was left untouched. Let the user running dmimport read and write "
        "the ledger, its -wal and -shm files and its folder (chown/chmod), or set state.path to "
        "a place it can write"
    )


@pytest.mark.parametrize("content", [b"root:x:0:0:root:/root:/bin/bash\n", b"\x00" * 4096])
def test_a_file_that_is_not_sqlite_is_not_a_ledger_and_is_never_to_be_moved(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "passwd"
    path.write_bytes(content)
    os.chmod(path, 0o644)
    with pytest.raises(LedgerError) as exc:
        Ledger(path)
    assert str(exc.value) == (
        f"{path} is not a dmimport ledger (not an SQLite database); it was left untouched. "
        "Set state.path to another file (a new one is created there)"
    )
    assert "mv " not in str(exc.value)
    assert path.read_bytes() == content and _mode(path) == "0o644"
    assert not Path(f"{path}-wal").exists() and not Path(f"{path}-shm").exists()


def test_etc_passwd_as_state_path_is_refused_without_advice_to_move_it() -> None:
    before = Path("/etc/passwd").read_bytes()
    with pytest.raises(LedgerError) as exc:
        Ledger("/etc/passwd")
    assert str(exc.value) == (
        "/etc/passwd is not a dmimport ledger (not an SQLite database); it was left untouched. "
        "Set state.path to another file (a new one is created there)"
    )
    assert Path("/etc/passwd").read_bytes() == before


def test_a_damaged_ledger_may_be_moved_aside_a_damaged_foreign_database_not(
    tmp_path: Path,
) -> None:
    ours = tmp_path / "state.db"
    Ledger(ours).close()
    theirs = tmp_path / "other.db"
    conn = sqlite3.connect(theirs)
    conn.executescript("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
    conn.close()
    for path in (ours, theirs):  # cut short after the header page's first bytes
        data = bytearray(path.read_bytes())
        data[100:4096] = b"\xff" * (4096 - 100)
        path.write_bytes(bytes(data))
    with pytest.raises(LedgerError) as exc:
        Ledger(ours)
    assert str(exc.value) == (
        f"ledger {ours} is a damaged dmimport ledger (database disk image is malformed); it was "
        f"left untouched. Move it aside with its -wal and -shm files (mv {ours} {ours}.bad) to "
        "start a new ledger, or set state.path to another file"
    )
    with pytest.raises(LedgerError) as exc:
        Ledger(theirs)
    assert str(exc.value) == (
        f"{theirs} is not a dmimport ledger (an SQLite database that cannot be read: database "
        "disk image is malformed); it was left untouched. Set state.path to another file"
    )


def test_every_ledger_file_is_private_whatever_existed(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    os.chmod(empty, 0o644)
    with Ledger(empty) as ledger:
        ledger.begin_run("customers", "r1", "c", [])
        files = [empty, Path(f"{empty}-wal"), Path(f"{empty}-shm")]
        assert [_mode(f) for f in files] == ["0o600"] * 3

    # a ledger copied with a umask of 022, its -wal and -shm too
    copy = tmp_path / "copy.db"
    with Ledger(tmp_path / "orig.db") as ledger:
        ledger.begin_run("customers", "r1", "c", [])
        for suffix in ("", "-wal", "-shm"):
            shutil.copyfile(f"{tmp_path / 'orig.db'}{suffix}", f"{copy}{suffix}")
            os.chmod(f"{copy}{suffix}", 0o644)
    with Ledger(copy) as ledger:
        assert [r.run_id for r in ledger.runs("customers")] == ["r1"]
        assert [_mode(Path(f"{copy}{s}")) for s in ("", "-wal", "-shm")] == ["0o600"] * 3


def test_opening_the_ledger_again_keeps_the_commits_of_a_run_another_process_shares_it_with(
    tmp_path: Path,
) -> None:
    # Closing any descriptor of a file drops every POSIX lock the process holds on it,
    # SQLite's included. The check of a ledger's first bytes, on each open (a reader, the
    # quota, keep_runs), dropped the locks of the process's open connection; another job's run
    # sharing the ledger, ending first, then took the file as its own, checkpointed and deleted
    # the WAL: this run's later commits (its status 'done') were lost, and its next run
    # resumed it as killed.
    path = tmp_path / "state.db"
    first = Ledger(path)
    first.begin_run("customers", "r1", "c", [])
    second = Ledger(path)  # this process opens the file again, as a run does
    other = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1])\n"
        "c.execute('SELECT count(*) FROM runs').fetchall()\n"
        "c.close()\n"
    )
    subprocess.run([sys.executable, "-c", other, str(path)], check=True)  # another job's run
    hold = other.replace("c.close()", "print('open', flush=True)\ninput()\nc.close()")
    holder = subprocess.Popen(  # and a third, still running when this one ends
        [sys.executable, "-c", hold, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "open\n"
        first.end_run("r1", status="done", counts={"ok": 1}, exit_code=0)
        second.close()
        first.close()
    finally:
        holder.communicate("\n", timeout=30)
    with Ledger(path) as ledger:
        assert [(r.run_id, r.status) for r in ledger.runs("customers")] == [("r1", "done")]
