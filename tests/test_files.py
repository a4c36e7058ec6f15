"""Files the library writes and reads (files.py): atomic writes, loads that run no code, folder locks."""
import json
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

from dgl_capsules.files import FolderInUseError, FolderLock, load_file, save_atomic, write_json, write_text


class Payload:
    """Unpickling this object would create the file ``marker`` (any code could run in its place)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_file_that_would_run_code_is_refused_by_name_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"w": torch.zeros(2), "x": Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"^thing '.*evil.pt': not loaded: it holds Python objects beyond tensors "
                                         r"and plain values, which are never unpickled$"):
        load_file(tmp_path / "evil.pt", "thing")
    assert not marker.exists()


def test_load_file_names_cut_short_files_directories_and_missing_files(tmp_path):
    save_atomic({"w": torch.arange(4)}, tmp_path / "ok.pt")
    assert torch.equal(load_file(tmp_path / "ok.pt")["w"], torch.arange(4))
    (tmp_path / "cut.pt").write_bytes((tmp_path / "ok.pt").read_bytes()[:100])
    with pytest.raises(ValueError, match=r"^resume '.*cut.pt': not loaded: it is cut short or was not written by "
                                         r"torch.save$"):
        load_file(tmp_path / "cut.pt", "resume")
    for name, data in [("text.pt", b"not a checkpoint"), ("pickle.pt", pickle.dumps({"w": 1}))]:
        (tmp_path / name).write_bytes(data)  # bytes no torch.save wrote: not mistaken for a file with objects
        with pytest.raises(ValueError, match=r"^resume '.*': not loaded: it is cut short or was not written by"):
            load_file(tmp_path / name, "resume")
    with pytest.raises(ValueError, match=r"^path '.*': is a directory; expected a file written by torch.save"):
        load_file(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"^path '.*nothing.pt': no such file$"):
        load_file(tmp_path / "nothing.pt")


@pytest.mark.parametrize("write", ["text", "json"])
def test_writes_are_atomic_a_failed_write_leaves_the_previous_file(tmp_path, monkeypatch, write):
    path = tmp_path / "table.md"
    write_text(path, "old table\n")
    if write == "text":
        def fail(*a, **k):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "fsync", fail)
        with pytest.raises(OSError, match="No space left"):
            write_text(path, "new table\n")
    else:
        with pytest.raises(TypeError, match="not JSON serializable"):
            write_json(path, {"x": object()})  # the text fails before any file is opened
    assert path.read_text() == "old table\n"
    assert os.listdir(tmp_path) == ["table.md"]  # no temporary file left
    monkeypatch.undo()
    write_json(tmp_path / "m.json", {"a": 1})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1}


def test_a_lock_names_its_owner_and_is_freed_on_release(tmp_path):
    folder = tmp_path / "run"
    lock = FolderLock(folder, "out").acquire()
    assert open(lock.path).read().split()[0] == str(os.getpid())
    with pytest.raises(FolderInUseError, match=rf"^out '{folder}' is in use by another run \(PID {os.getpid()}, "
                                               rf"lock file {folder}/.lock\); wait for it to end or stop it$"):
        FolderLock(folder, "out").acquire()  # a second holder, even in the same process
    assert os.listdir(folder) == [".lock"]  # the refused second lock changed nothing
    lock.release()
    assert not folder.exists()  # the lock made the folder, and nothing else was put in it
    with FolderLock(folder):
        pass


def test_a_lock_made_for_a_new_folder_leaves_no_empty_folder_behind(tmp_path):
    with FolderLock(tmp_path / "new"):
        assert (tmp_path / "new").is_dir()
    assert not (tmp_path / "new").exists()
    with FolderLock(tmp_path / "kept"):
        (tmp_path / "kept" / "model.pt").write_bytes(b"")
    assert os.listdir(tmp_path / "kept") == ["model.pt"]


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_stale_lock_is_taken_over_with_one_line(tmp_path):
    pid = _dead_pid()
    (tmp_path / ".lock").write_text(f"{pid} somehost\n")
    lines = []
    with FolderLock(tmp_path, "out", log=lines.append) as lock:
        assert open(lock.path).read().split()[0] == str(os.getpid())
    assert lines == [f"out '{tmp_path}': taking over the lock of PID {pid}, which has ended ({tmp_path}/.lock)"]


def test_a_lock_held_by_another_process_is_refused_until_that_process_ends(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from dgl_capsules.files import FolderLock
        lock = FolderLock({str(tmp_path)!r}).acquire()
        print("held", flush=True)
        sys.stdin.readline()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderInUseError, match=rf"in use by another run \(PID {holder.pid}, "):
            FolderLock(tmp_path).acquire()
        assert FolderLock.owner(tmp_path) == str(holder.pid)
    finally:
        holder.kill()  # SIGKILL: no clean-up runs, the lock file stays behind
        holder.wait()
    assert (tmp_path / ".lock").exists() and FolderLock.owner(tmp_path) is None  # a stale file holds nothing
    lines = []
    with FolderLock(tmp_path, log=lines.append):
        pass
    assert lines and f"taking over the lock of PID {holder.pid}, which has ended" in lines[0]


def test_shipped_weights_that_would_run_code_are_refused_and_run_nothing(tmp_path, monkeypatch):
    """The manifest's SHA-256 matches (the file was made that way), and still nothing in it is unpickled."""
    import hashlib

    from dgl_capsules.models import get_model
    from dgl_capsules.models import weights as weights_module

    monkeypatch.setattr(weights_module, "_DIR", str(tmp_path))
    marker = tmp_path / "ran"
    net = get_model("capsnet", "tiny")
    torch.save(dict(net.state_dict(), extra=Payload(marker)), tmp_path / "evil.pt")
    entry = dict(model="capsnet", preset="tiny", name="evil", file="evil.pt",
                 sha256=hashlib.sha256((tmp_path / "evil.pt").read_bytes()).hexdigest(), settings={},
                 shape=dict(in_channels=1, image_size=28, n_classes=10), data="mnist5k", parameters=0, accuracy=0.0,
                 experiment={}, command="", commit="", routing={}, dtype="float32")
    (tmp_path / "manifest.json").write_text(json.dumps([entry]))
    with pytest.raises(ValueError, match=r"^weights '.*evil.pt': not loaded: it holds Python objects beyond tensors"):
        get_model("capsnet", "tiny", weights="evil")
    assert not marker.exists()
