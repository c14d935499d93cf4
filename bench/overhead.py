"""What the factory costs on top of the model: a chat batch end to end vs bare ``model.generate``.

One run, the same machine, the same prompts, dtype, batch size and token budget:

- **end to end**: a real API process and one real worker process (embedded Redis, SQLite,
  local storage), the way ``make demo`` runs them. A JSONL of chat-completion lines is
  uploaded, ``POST /v1/batches`` submits it, and the clock runs from that request until
  the batch is ``completed`` (validation, queueing, claiming, generation, item rows, result
  shards and the output file all inside). The worker has loaded the model and run a
  one-line warm-up batch first, so model load is excluded.
- **bare**: the same model loaded in this process with transformers, the same chat
  template, left padding, greedy decoding and repetition penalty, ``generate`` over the
  same lines in the same groups of ``batch`` (what a chunk is), measured before and after
  the end-to-end run (the mean of the two, so drift on a loaded machine cancels out).

Tokens are the completion tokens each side generated (end-of-sequence included); the
ratio is end-to-end tokens/s over bare tokens/s (the issue's target: at least 0.90).

    python -m bench.overhead --write    # 48 lines, 32 new tokens (about 3 minutes on a 2-core CPU)
    python -m bench.overhead --quick    # smoke mode for CI
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import httpx
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bench.readme import write_section
from factory import embedded_redis
from factory.auth.service import create_key
from factory.batches.service import DEFAULT_PARAMS
from factory.config import Settings
from factory.db.migrate import upgrade
from factory.db.session import session_scope
from factory.models import registry
from workers.generators.transformers_gen import pick_device, pick_dtype
from workers.model_store import materialize

PRODUCTS = ["trail shoes", "rain jacket", "espresso grinder", "yoga mat", "desk lamp", "travel mug",
            "wool socks", "bike light"]
CITIES = ["Lisbon", "Denver", "Lyon", "Pune", "Oslo", "Calgary", "Wellington", "Sapporo"]


def conversations(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "system", "content": "You write short, friendly marketing copy."},
             {"role": "user", "content": f"One sentence inviting a customer in {CITIES[i % 8]} to try our "
                                         f"{PRODUCTS[(i * 3) % 8]}."}] for i in range(n)]


def batch_file(convs: list[list[dict[str, str]]], model: str, max_tokens: int) -> bytes:
    lines = [{"custom_id": f"line-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": model, "messages": conv, "max_tokens": max_tokens, "temperature": 0}}
             for i, conv in enumerate(convs)]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def bare(model_dir: Path, dtype: torch.dtype, device: torch.device, convs: list[list[dict[str, str]]],
         batch: int, max_new_tokens: int) -> tuple[int, float]:
    """(completion tokens, seconds) of ``generate`` over ``convs`` in groups of ``batch``."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)  # type: ignore[arg-type]
    model.eval()
    eos = tokenizer.eos_token_id
    tokens = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(convs), batch):
            enc = tokenizer.apply_chat_template(convs[i:i + batch], add_generation_prompt=True, padding=True,
                                                return_tensors="pt", return_dict=True).to(device)
            out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                                 repetition_penalty=DEFAULT_PARAMS["repetition_penalty"],
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
            for row in out[:, enc["input_ids"].shape[1]:].tolist():
                tokens += row.index(eos) + 1 if eos in row else len(row)
    return tokens, time.perf_counter() - start


class Stack:
    """An API and one worker process on embedded defaults in a temporary directory."""

    def __init__(self, root: Path, dtype: str, batch: int) -> None:
        self.root = root
        self.env = {**os.environ, "FACTORY_DATA_DIR": str(root), "FACTORY_DATABASE_URL": f"sqlite:///{root}/f.db",
                    "FACTORY_STORAGE_URL": f"file://{root}/objects", "FACTORY_TORCH_DTYPE": dtype,
                    "FACTORY_CHUNK_SIZE": str(batch),
                    "FACTORY_BROKER_URL": embedded_redis.ensure_running(root / "redis")}
        upgrade(self.env["FACTORY_DATABASE_URL"])
        with session_scope(self.env["FACTORY_DATABASE_URL"]) as session:
            _, self.key = create_key(session, "bench", "bench.overhead", ("read", "write"), expires_in_days=1)
        self.url = f"http://127.0.0.1:{free_port()}"
        cmd = [sys.executable, "-m", "factory.cli"]
        self.procs = [subprocess.Popen([*cmd, "api", "--port", self.url.rsplit(":", 1)[1]], env=self.env,
                                       stdout=(root / "api.log").open("wb"), stderr=subprocess.STDOUT),
                      subprocess.Popen([*cmd, "worker", "--loglevel", "WARNING"], env=self.env,
                                       stdout=(root / "worker.log").open("wb"), stderr=subprocess.STDOUT)]
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=60)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if self.http.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"the API did not start; see {self.root / 'api.log'}")

    def run_batch(self, data: bytes, timeout: float) -> tuple[int, float]:
        """(completion tokens, seconds from POST /v1/batches to completed)."""
        file_id = self.http.post("/v1/files", data={"purpose": "batch"},
                                 files={"file": ("lines.jsonl", data)}).raise_for_status().json()["id"]
        start = time.perf_counter()
        batch = self.http.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                                    "completion_window": "24h"}).raise_for_status().json()
        deadline = time.monotonic() + timeout
        while batch["status"] not in ("completed", "failed", "expired", "cancelled"):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"batch not done in time; see {self.root}/*.log")
            time.sleep(0.05)
            batch = self.http.get(f"/v1/batches/{batch['id']}").raise_for_status().json()
        elapsed = time.perf_counter() - start
        if batch["status"] != "completed" or batch["request_counts"]["failed"]:
            raise RuntimeError(f"batch {batch['status']}: {batch['request_counts']}")
        output = self.http.get(f"/v1/files/{batch['output_file_id']}/content").raise_for_status().text
        tokens = sum(json.loads(line)["response"]["body"]["usage"]["completion_tokens"]
                     for line in output.splitlines())
        return tokens, elapsed

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        embedded_redis.stop(self.root / "redis")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smoke mode: 8 lines, 4 new tokens")
    ap.add_argument("--write", action="store_true", help="record the table in bench/README.md")
    ap.add_argument("--lines", type=int, default=48)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    args = ap.parse_args()
    lines, max_new = (8, 4) if args.quick else (args.lines, args.max_new_tokens)
    settings = Settings()
    spec = registry.resolve(settings.model)
    local = materialize(spec, settings.model_cache_dir)
    device = pick_device(settings.device)
    # The dtype the worker would choose on this machine for this batch (measured once, cached).
    dtype = pick_dtype(settings.torch_dtype, device, local.path, local.weights_sha256, args.batch,
                       settings.model_cache_dir)
    dtype_name = str(dtype).removeprefix("torch.")
    convs = conversations(lines)

    bare_before = bare(local.path, dtype, device, convs, args.batch, max_new)
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        stack = Stack(Path(tmp), dtype_name, args.batch)
        try:
            stack.wait_ready()
            stack.run_batch(batch_file(convs[:1], spec.name, max_new), timeout=600)  # model load and warm-up
            e2e_tokens, e2e_s = stack.run_batch(batch_file(convs, spec.name, max_new), timeout=1800)
        finally:
            stack.stop()
    bare_after = bare(local.path, dtype, device, convs, args.batch, max_new)

    bare_tok_s = (bare_before[0] / bare_before[1] + bare_after[0] / bare_after[1]) / 2
    e2e_tok_s = e2e_tokens / e2e_s
    ratio = e2e_tok_s / bare_tok_s
    table = ("| path | completion tokens | seconds | tokens/s |\n|---|---|---|---|\n"
             f"| bare `generate`, before | {bare_before[0]} | {bare_before[1]:.2f} | "
             f"{bare_before[0] / bare_before[1]:.0f} |\n"
             f"| end to end (API + worker) | {e2e_tokens} | {e2e_s:.2f} | {e2e_tok_s:.0f} |\n"
             f"| bare `generate`, after | {bare_after[0]} | {bare_after[1]:.2f} | "
             f"{bare_after[0] / bare_after[1]:.0f} |\n\n"
             f"**end to end / bare: {ratio:.2f}**")
    meta = (f"model {spec.name}, {lines} chat lines, batch {args.batch}, {max_new} new tokens, greedy, "
            f"{dtype_name} (the worker's measured choice); torch {torch.__version__}, {torch.get_num_threads()} "
            f"threads, {platform.machine()}; `python -m bench.overhead --write`")
    print(table)
    print(meta)
    if args.quick:
        assert e2e_tokens > 0 and ratio > 0, "no tokens came back"
    if args.write:
        write_section("overhead", table, meta)


if __name__ == "__main__":
    main()
