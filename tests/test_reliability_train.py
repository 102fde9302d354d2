"""A training run survives what happens to real runs: a damaged latest checkpoint, SIGINT /
SIGTERM, a full disk and kill -9 at any moment, each ending in a resume whose losses are
bit-equal to an uninterrupted run and logs holding each step once; and its console shows one
progress line, a short header and no parameter table."""
from __future__ import annotations

import errno
import glob
import io
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from adacode_jax.models import checkpointing
from adacode_jax.training import checkpoints, console, loop as train, preemption
from adacode_jax.training import workdir as workdir_lib
from adacode_jax.configs._base import REPO
from tests.test_train import losses_by_step, mechanics_config, read_metrics

STEPS = 6


def _config(**overrides):
    kw = dict(num_steps=STEPS, checkpoint_every=2, keep_checkpoints=3)
    kw.update(overrides)
    return mechanics_config(**kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: 6 steps, checkpoints at 2, 4 and 6."""
    wd = str(tmp_path_factory.mktemp("reference") / "run")
    train.train_and_evaluate(_config(), wd)
    return wd


def _copy(reference, tmp_path) -> str:
    wd = str(tmp_path / "run")
    shutil.copytree(reference, wd)
    return wd


def _assert_same_run(reference, wd, steps=range(1, STEPS + 1)):
    """Losses bit-equal to the reference, each step once in metrics.jsonl and TensorBoard."""
    logged = [m["step"] for m in read_metrics(wd) if "loss/g_total" in m]
    assert logged == list(steps), logged
    a, b = losses_by_step(reference), losses_by_step(wd)
    for s in steps:
        assert a[s] == b[s], (s, a[s], b[s])
    assert _tensorboard_steps(wd, "loss/g_total") == list(steps)


def _events(wd) -> list:
    """Every event of the run's TensorBoard files, read by TensorBoard's own loader."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return [e for f in sorted(glob.glob(os.path.join(wd, "tensorboard", "events.out.tfevents*")))
            for e in EventFileLoader(f).Load()]


def _tensorboard_steps(wd, tag) -> list[int]:
    return sorted(e.step for e in _events(wd) for v in e.summary.value if v.tag == tag)


def _largest_file(folder) -> str:
    files = [p for p in glob.glob(os.path.join(folder, "**"), recursive=True) if os.path.isfile(p)]
    return max(files, key=os.path.getsize)


# ---- console: pure formatting ------------------------------------------------------------------

def test_progress_line_and_durations():
    assert [console.format_duration(s) for s in (0, 42.4, 185, 7620, 3 * 86400 + 4 * 3600, None)] \
        == ["0s", "42s", "3m05s", "2h07m", "3d04h", "?"]
    line = console.progress_line(120, 1200, 3.2, {"loss/pix": 0.08123, "loss/g_gan": 0.6931,
                                                  "loss/codebook": 2.1e-5, "loss/other": 9.0},
                                 console.KEY_LOSSES[2])
    # lpips (weight 0, not logged) is left out; ETA = 1080 steps / 3.2 steps/s = 337.5 s
    assert line == ("step  120/1200 ( 10%) | 3.2 steps/s | ETA 5m38s | pix 0.08123 "
                    "codebook 2.100e-05 gan 0.6931")
    assert console.progress_line(5, 10, 0.25, {}, ()) == "step  5/10 ( 50%) | 4 s/step | ETA 20s"
    assert console.progress_line(0, 10, None, {}, ()) == "step  0/10 (  0%)"


def test_run_header_and_parameter_counts():
    g = {"encoder": {"w": np.zeros((3, 4))}, "quantize_group.0": {"embedding": np.zeros((64, 32))},
         "decoder_group.0": {"w": np.zeros((10,))}}
    counts = console.parameter_counts(g, {"conv": np.zeros((2, 5))}, ("quantize", "decoder"))
    assert counts == {"g_trainable": 12, "g_frozen": 2058, "d": 10}
    header = console.run_header(label="configs/stage3_sr.py:x4,tiny", stage=3, kind="sr_x4",
                                devices="8 x cpu", mesh_shape={"data": 4, "fsdp": 2},
                                processes=1, counts={"g_trainable": 1_234_567,
                                                     "g_frozen": 45_600_000, "d": 2_760_000},
                                workdir="/runs/x", start=40, total=1200)
    assert header == textwrap.dedent("""\
        configs/stage3_sr.py:x4,tiny | stage 3 (sr_x4) | 1200 steps, resuming at step 40
          devices  8 x cpu; mesh 4 data x 2 fsdp
          params   G 1.23M trainable + 45.6M frozen, D 2.76M
          workdir  /runs/x  (log: /runs/x/train.log)""")


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_prints_periodic_lines_off_a_tty_and_rewrites_one_on_a_tty():
    clock, out = _Clock(), io.StringIO()
    p = console.Progress(100, (("loss/pix", "pix"),), stream=out, interval_s=30, clock=clock)
    for step in range(1, 101):
        clock.t = step * 0.5                  # 2 steps/s
        p.update(step, {"loss/pix": 1.0 / step})
    lines = out.getvalue().splitlines()
    # the first update, then every 30 s (60 steps), then the last step
    assert lines == ["step   1/100 (  1%) | pix 1",
                     "step  61/100 ( 61%) | 2 steps/s | ETA 20s | pix 0.01639",
                     "step 100/100 (100%) | 2 steps/s | ETA 0s | pix 0.01"]
    clock, tty = _Clock(), _Tty()
    p = console.Progress(3, (), stream=tty, clock=clock)
    for step in (1, 2):
        clock.t = step
        p.update(step, {})
    p.clear()                                  # a log line comes: the progress line goes
    clock.t = 3
    p.update(3, {})
    assert tty.getvalue() == ("\rstep 1/3 ( 33%)\x1b[K\rstep 2/3 ( 66%) | 1 steps/s | ETA 1s"
                              "\x1b[K\r\x1b[K\rstep 3/3 (100%) | 1 steps/s | ETA 0s\x1b[K\n")


def test_console_of_a_run_header_progress_and_log_file(reference, capsys):
    """The run's terminal output: the header and progress lines, no parameter table, which
    goes with every log line to workdir/train.log."""
    wd = reference
    with open(os.path.join(wd, console.LOG_FILE)) as f:
        log = f.read()
    assert "generator parameters" in log and "discriminator parameters" in log
    assert log.count("+---") > 4 and "Total:" in log           # the clu tables
    assert "stage 2 (stage2) | 6 steps, from step 0" in log
    assert "  params   G " in log and " frozen, D " in log


def test_console_output_of_a_short_resumed_run(reference, tmp_path, capsys):
    wd = _copy(reference, tmp_path)
    shutil.rmtree(os.path.join(wd, "checkpoints", "6"))
    train.train_and_evaluate(_config(), wd)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "stage 2 config | stage 2 (stage2) | 6 steps, resuming at step 4"
    assert lines[1] == "  devices  1 x cpu; mesh 1 data x 1 fsdp"
    assert lines[2].startswith("  params   G ") and lines[3] == (
        f"  workdir  {wd}  (log: {wd}/train.log)")
    progress = [ln for ln in lines if ln.startswith("step ")]
    # the rate reads "N steps/s" or "N s/step" by the machine's speed: either form is right
    assert progress[0].startswith("step 5/6 ( 83%) | pix ")
    assert re.fullmatch(r"step 6/6 \(100%\) \| [0-9.e+]+ (steps/s|s/step) \| ETA 0s \| pix .+",
                        progress[-1]), progress[-1]
    assert "+---" not in out and "parameters" not in out
    _assert_same_run(reference, wd)


# ---- a damaged latest checkpoint ---------------------------------------------------------------

def _nan_into_state(step_dir):
    """Rewrite ``step_dir/state`` with one NaN in the generator's output convolution."""
    import orbax.checkpoint as ocp
    from flax import traverse_util

    path = os.path.join(step_dir, "state")
    with ocp.StandardCheckpointer() as c:
        meta = c.metadata(path).item_metadata
        tree = c.restore(path, jax_tree_map(lambda m: np.empty(m.shape, m.dtype), meta))
        flat = traverse_util.flatten_dict(tree["g_params"], sep="/")
        leaf = sorted(k for k in flat if k.startswith("out_conv"))[-1]
        flat[leaf] = np.array(flat[leaf])
        flat[leaf].flat[0] = np.nan
        tree["g_params"] = traverse_util.unflatten_dict(flat, sep="/")
        c.save(path + ".nan", tree)
    shutil.rmtree(path)
    os.rename(path + ".nan", path)
    return f"g_params/{leaf}"


def jax_tree_map(fn, tree):
    import jax

    return jax.tree.map(fn, tree)


@pytest.mark.parametrize("damage", ["truncated", "missing", "nan"])
def test_a_damaged_latest_checkpoint_is_reported_and_the_run_resumes_before_it(
        reference, tmp_path, caplog, damage):
    wd = _copy(reference, tmp_path)
    step6 = os.path.join(wd, "checkpoints", "6")
    if damage == "truncated":
        victim = _largest_file(os.path.join(step6, "state"))
        with open(victim, "r+b") as f:
            f.truncate(os.path.getsize(victim) // 2)
        why = "it does not restore ("
    elif damage == "missing":
        os.remove(os.path.join(step6, "data", "process_0-of-1.json"))
        why = "it does not restore ("
    else:
        why = f"{_nan_into_state(step6)} holds NaN/Inf values"
    # the run was killed after its last checkpoint: the later entries must go
    with open(os.path.join(wd, "metrics.jsonl"), "a") as f:
        f.write('{"step": 7, "loss/g_total": 1.0}\n{"step": 8, "los')
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        train.train_and_evaluate(_config(), wd)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    moved = os.path.join(wd, "checkpoints_damaged", "6")
    assert len(warnings) == 1 and warnings[0].startswith(f"{step6}: damaged checkpoint: {why}")
    assert warnings[0].endswith(f"; moved to {moved}; resuming from step 4 instead")
    assert os.path.isdir(moved)
    assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["2", "4", "6"]
    _assert_same_run(reference, wd)


def test_no_intact_checkpoint_is_an_error_not_a_restart(reference, tmp_path):
    wd = _copy(reference, tmp_path)
    ckpts = os.path.join(wd, "checkpoints")
    for step in ("2", "4"):
        os.remove(os.path.join(ckpts, step, "data", "process_0-of-1.json"))
    victim = _largest_file(os.path.join(ckpts, "6", "state"))
    with open(victim, "r+b") as f:
        f.truncate(100)
    before = read_metrics(wd)
    with pytest.raises(checkpoints.DamagedCheckpointsError) as e:
        train.train_and_evaluate(_config(), wd)
    msg = str(e.value)
    assert msg.startswith(f"{ckpts}: none of the 3 checkpoints is intact (step 6: it does not "
                          "restore (")
    assert "; step 4: it does not restore (" in msg and "; step 2: it does not restore (" in msg
    assert msg.endswith(f"); restore the folder from a backup, or move it away (e.g. mv {ckpts} "
                        f"{ckpts}.bad) to train from step 0")
    assert "\n" not in msg
    assert read_metrics(wd) == before                       # nothing trained, nothing dropped
    assert not os.path.exists(os.path.join(wd, workdir_lib.LOCK_FILE))


# ---- SIGINT / SIGTERM ----------------------------------------------------------------------------

def test_sigterm_stops_at_a_step_saves_exports_and_resumes_exactly(reference, tmp_path,
                                                                   monkeypatch, caplog):
    """SIGTERM during step 3; a second signal (SIGINT) in the middle of the save of step 3."""
    wd = str(tmp_path / "run")
    real_update, real_save = console.Progress.update, checkpointing.RunCheckpoints.save
    sent = []

    def update(self, step, scalars, **kw):
        if step == 2 and not sent:
            sent.append("TERM")
            os.kill(os.getpid(), signal.SIGTERM)     # handled before step 3 ends
        return real_update(self, step, scalars, **kw)

    def save(self, step, *args, **kw):
        if step == 3:
            sent.append("INT")
            os.kill(os.getpid(), signal.SIGINT)      # a second signal while it saves
        return real_save(self, step, *args, **kw)

    monkeypatch.setattr(console.Progress, "update", update)
    monkeypatch.setattr(checkpointing.RunCheckpoints, "save", save)
    # the handlers the run must give back: Python's defaults, or SIG_IGN for SIGINT where the
    # test process was started in the background by a shell without job control
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with caplog.at_level(logging.WARNING):
        last = train.train_and_evaluate(_config(), wd)
    assert sent == ["TERM", "INT"]
    assert last["train/stopped_at_step"] == 3.0
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"SIGTERM: stopped at step 3 of 6; saved the checkpoint {wd}/checkpoints/3 and the "
        f"export; resume with the same command (it continues from step 3)"]
    assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["2", "3"]
    cfg, _, meta = checkpointing.load_inference(os.path.join(wd, "export", "generator"))
    assert meta["step"] == 3
    monkeypatch.undo()
    caplog.clear()
    train.train_and_evaluate(_config(), wd)
    _assert_same_run(reference, wd)


def test_stop_request_agrees_across_processes(monkeypatch):
    """Several processes: each votes at every poll_every-th step behind a barrier; all stop
    if any was signalled (a fake coordination-service client)."""
    from orbax.checkpoint import multihost

    store, barriers = {}, []

    class Client:
        def key_value_set(self, k, v):
            store[k] = v

        def wait_at_barrier(self, name, timeout_ms):
            barriers.append(name)

        def key_value_dir_get(self, prefix):
            return [(k, v) for k, v in store.items() if k.startswith(prefix)]

    import jax
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    monkeypatch.setattr(multihost, "get_jax_distributed_client", lambda: Client())
    stop = preemption.StopRequest(poll_every=5)
    assert not stop.agreed(5) and not stop.agreed(7) and len(barriers) == 1
    store[f"adacode:stop:{stop._round}:10/0"] = str(int(signal.SIGTERM))   # process 0's vote
    assert not stop.agreed(9)
    assert stop.agreed(10) and stop.name == "SIGTERM"
    assert len(barriers) == 2 and barriers[-1] == f"adacode_stop_{stop._round}_10"
    with stop:                                     # this process signalled itself
        os.kill(os.getpid(), signal.SIGINT)
        other = preemption.StopRequest(poll_every=5)
    other.signum = signal.SIGINT
    assert other.agreed(15) and store[f"adacode:stop:{other._round}:15/1"] == str(int(signal.SIGINT))


def test_resume_drops_tensorboard_and_jsonl_entries_beyond_the_checkpoint(reference, tmp_path):
    from tensorboardX import SummaryWriter

    wd = _copy(reference, tmp_path)
    shutil.rmtree(os.path.join(wd, "checkpoints", "6"))         # as if killed after step 6's logs
    with SummaryWriter(os.path.join(wd, "tensorboard"), filename_suffix=".stray") as w:
        w.add_scalar("loss/g_total", 123.0, global_step=5)     # a later step's stray event
    stray = glob.glob(os.path.join(wd, "tensorboard", "*.stray"))[0]
    with open(stray, "ab") as f:                                 # and a record cut short by a kill
        f.write(b"\x40\x00\x00\x00\x00\x00\x00\x00\x01\x02")
    assert _tensorboard_steps(wd, "loss/g_total") == [1, 2, 3, 4, 5, 5, 6]
    later = sum(e.step > 4 and e.HasField("summary") for e in _events(wd))
    assert later >= 3
    assert workdir_lib.drop_logs_after(wd, 4) == {"metrics.jsonl": 2, "tensorboard": later + 1}
    assert not os.path.exists(stray)         # nothing of it was left
    assert _tensorboard_steps(wd, "loss/g_total") == [1, 2, 3, 4]
    assert [m["step"] for m in read_metrics(wd)] == [1, 2, 3, 4]
    workdir_lib.drop_logs_after(wd, 0)
    assert _tensorboard_steps(wd, "loss/g_total") == [] and read_metrics(wd) == []


# ---- a full disk -----------------------------------------------------------------------------------

def test_enospc_during_a_checkpoint_is_one_error_and_earlier_ones_stay(reference, tmp_path,
                                                                       monkeypatch, caplog):
    """A simulated full disk where the checkpoint really writes (the data iterator's file)."""
    from etils import epath

    wd = str(tmp_path / "run")
    real = epath.gpath.PosixGPath.write_text

    def write_text(self, *args, **kw):
        if "/checkpoints/4" in str(self):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, *args, **kw)

    monkeypatch.setattr(epath.gpath.PosixGPath, "write_text", write_text)
    with caplog.at_level(logging.INFO), pytest.raises(checkpointing.DiskFullError) as e:
        train.train_and_evaluate(_config(), wd)
    msg, ckpts = str(e.value), os.path.join(wd, "checkpoints")
    assert msg.startswith(f"{ckpts}/4: no space left on device while writing the checkpoint of "
                          "step 4 (needs about 7.")
    assert msg.endswith(f" free); free disk space or move {wd} to a larger disk, then run the "
                        "same command again: it resumes from step 2")
    assert " MB, " in msg and "\n" not in msg
    assert sorted(os.listdir(ckpts)) == ["2"]                  # the partial step 4 is gone
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not os.path.exists(os.path.join(wd, workdir_lib.LOCK_FILE))
    monkeypatch.undo()
    train.train_and_evaluate(_config(), wd)
    _assert_same_run(reference, wd)


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield str(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_real_full_disk_during_an_async_checkpoint(reference, small_tmpfs, caplog):
    """A 12 MB tmpfs: the checkpoint of step 2 (7.5 MB) fits, the asynchronous one of step 4
    does not (TensorStore's ENOSPC, raised in Orbax's writer threads)."""
    wd = os.path.join(small_tmpfs, "run")
    with caplog.at_level(logging.INFO), pytest.raises(checkpointing.DiskFullError) as e:
        train.train_and_evaluate(_config(async_checkpoints=True), wd)
    msg = str(e.value)
    assert msg.startswith(f"{wd}/checkpoints/4: no space left on device while writing the "
                          "checkpoint of step 4 (needs about 7.")
    assert msg.endswith("it resumes from step 2"), msg
    # The free space of the message is the one when the write failed (background writes of
    # Orbax may still change it after the raise): the figure must be the exception's, below
    # what was needed, and within the 12 MB tmpfs.
    free, needed = e.value.free, e.value.needed
    assert free is not None and 0 <= free < needed < 12 * 2**20, (free, needed)
    assert f"needs about {console.format_bytes(needed)}, {console.format_bytes(free)} free)" in msg
    assert abs(shutil.disk_usage(small_tmpfs).free - free) < needed
    assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["2"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    subprocess.run(["mount", "-o", "remount,size=64m", small_tmpfs], check=True)
    train.train_and_evaluate(_config(async_checkpoints=True), wd)
    _assert_same_run(reference, wd)


def test_disk_full_detection():
    assert checkpointing.is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert checkpointing.is_disk_full(ValueError(
        "RESOURCE_EXHAUSTED: Failed writing: \"/x/d/1\": Failed to write 2550913 bytes to file 7: "
        "No space left on device [os_error_code='28']"))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("commit failed") from inner
    except RuntimeError as outer:
        assert checkpointing.is_disk_full(outer)
    assert not checkpointing.is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not checkpointing.is_disk_full(ValueError("os_error_code='280'"))


# ---- kill -9 at random moments ---------------------------------------------------------------------

_CHILD = """
import os, sys
sys.path.insert(0, {repo!r})
from absl import flags
flags.FLAGS.mark_as_parsed()
from tests.test_reliability_train import _config
from adacode_jax.training import loop as train
train.train_and_evaluate(_config(), {wd!r})
"""


def _logged_steps(wd) -> int:
    try:
        with open(os.path.join(wd, "metrics.jsonl")) as f:
            return max([json.loads(line)["step"] for line in f if line.endswith("\n")] or [0])
    except (OSError, ValueError):
        return 0


def test_kill_9_at_random_moments_then_resume_exactly(reference, tmp_path):
    rng = random.Random(1234)
    wd = str(tmp_path / "run")
    script = _CHILD.format(repo=REPO, wd=wd)
    env = dict(os.environ)
    # kill once the run has logged step k, plus a random delay: inside a step, a log write,
    # a checkpoint save or the export
    for k in (rng.randint(1, 2), rng.randint(3, 5)):
        delay = rng.uniform(0.0, 0.4)
        child = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=REPO,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while _logged_steps(wd) < k and child.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL, "the run ended before the kill"
    r = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_same_run(reference, wd)
    final = checkpointing.load_inference(os.path.join(wd, "export", "generator"))[1]
    ref = checkpointing.load_inference(os.path.join(reference, "export", "generator"))[1]
    for a, b in zip(jax_leaves(final), jax_leaves(ref)):
        np.testing.assert_array_equal(a, b)


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)
