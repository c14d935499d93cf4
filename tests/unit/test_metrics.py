"""The pieces of the metrics: failure reasons as bounded names, the metrics token, the multi-process
folder's set-up and clean-up (the process-level tests are tests/integration/test_observability.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from factory.config import Settings
from factory.metrics import exposition, multiprocess
from workers.chunk_events import failure_reason


@pytest.mark.parametrize(("error", "reason"), [
    ("generation failed: PoisonedPrompt", "PoisonedPrompt"),
    ("generation failed: out of memory", "out_of_memory"),
    ("generation failed: the prompt is 9000 tokens; with max_new_tokens 96 it exceeds 8192", "prompt_too_long"),
    ("subject: generation failed: ValueError; body: generation failed: ValueError", "ValueError"),
    ("eda failed: KeyError", "KeyError"),
    ("gave up on Ana Lopez's record", "other"),  # free text never becomes a label
    (None, "other"),
])
def test_a_failed_items_reason_is_a_bounded_name(error: str | None, reason: str) -> None:
    assert failure_reason(error) == reason


@pytest.mark.parametrize(("header", "allowed"), [
    (None, False), ("", False), ("Bearer wrong-token", False), ("Basic s3cr3t-metrics-token", False),
    ("Bearer s3cr3t-metrics-token", True), ("bearer s3cr3t-metrics-token", True),
])
def test_the_metrics_token_is_required_when_set(header: str | None, allowed: bool) -> None:
    assert exposition.authorized(Settings(metrics_token="s3cr3t-metrics-token"), header) is allowed
    assert exposition.authorized(Settings(), header) is True  # no token configured: open


def test_the_shared_folder_must_be_set_up_before_prometheus_client_is_imported(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import prometheus_client  # noqa: F401  (imported, as in any test process by now)

    monkeypatch.delenv(multiprocess.ENV, raising=False)
    with pytest.raises(RuntimeError, match="imported before"):
        multiprocess.share_between_processes(Settings(data_dir=tmp_path), "worker-1")
    # In a fresh process it works, empties what a previous run left, and every child inherits it.
    stale = tmp_path / "metrics" / "worker-1" / "counter_1.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old totals")
    code = ("import os, sys; from factory.config import Settings; from factory.metrics import multiprocess; "
            f"p = multiprocess.share_between_processes(Settings(data_dir={str(tmp_path)!r}), 'worker-1'); "
            "import prometheus_client.values as v; print(p, os.environ['PROMETHEUS_MULTIPROC_DIR'], "
            "v.ValueClass.__name__, sorted(os.listdir(p)))")
    env = {k: v for k, v in os.environ.items() if k != multiprocess.ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    folder = tmp_path / "metrics" / "worker-1"
    assert out.stdout.split() == [str(folder), str(folder), "MmapedValue", "[]"]


def test_live_gauges_of_dead_processes_are_forgotten(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    for pid in (gone.pid, os.getpid()):
        (tmp_path / f"gauge_livesum_{pid}.db").write_bytes(b"")
    (tmp_path / f"counter_{gone.pid}.db").write_bytes(b"")  # a dead child's counts stay: totals survive it
    assert multiprocess.forget_dead_processes(tmp_path) == [gone.pid]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"counter_{gone.pid}.db", f"gauge_livesum_{os.getpid()}.db"])
