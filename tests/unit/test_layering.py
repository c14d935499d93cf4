"""factory/ never imports workers/, torch or transformers (the API runs without them); its packages
import each other without cycles; jobs are written through the one writer."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("torch", "transformers", "workers", "accelerate", "gguf", "sentence_transformers", "wn")


def _imports(path: Path, full: bool = False) -> set[str]:
    """Top-level names of the modules ``path`` imports; ``full``: the dotted names (``from factory import
    kinds`` is ``factory.kinds``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name if full else a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if full and node.module == "factory":
                names.update(f"factory.{a.name}" for a in node.names)
            else:
                names.add(node.module if full else node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted((REPO / "factory").rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_factory_module_imports_no_worker_code(path: Path) -> None:
    assert not (_imports(path) & set(FORBIDDEN))


def test_api_serves_requests_with_torch_unavailable(tmp_path: Path) -> None:
    # Block the model stack at import level: any attempt to import it raises.
    code = f"""
import sys
for name in {FORBIDDEN!r}:
    sys.modules[name] = None
from fastapi.testclient import TestClient
from factory.api.app import create_app
from factory.config import Settings
s = Settings(database_url="sqlite:///{tmp_path}/api.db", broker_url="redis://127.0.0.1:1/0",
             storage_url="file://{tmp_path}/objects")
with TestClient(create_app(s)) as client:
    from factory.auth.service import create_key
    from factory.db.session import session_scope
    with session_scope(s.database_url) as session:
        client.headers["Authorization"] = "Bearer " + create_key(session, "t", "k", ["write"])[1]
    r = client.get("/healthz")
    assert r.status_code == 200, r.text
    r = client.post("/v1/jobs", json={{"kind": "nope"}})
    assert r.status_code == 422, r.text
    # An augmentation job's dataset is parsed in the API (pyarrow for Parquet), still without torch.
    r = client.post("/v1/jobs", json={{"kind": "augmentation", "methods": [{{"method": "eda"}}],
                                      "dataset": {{"content": "UEFSMWdhcmJhZ2U=", "format": "parquet"}}}})
    assert r.status_code == 422 and "Parquet" in r.json()["error"]["message"], r.text
print("api-ok", "torch" in sys.modules and sys.modules["torch"] is not None)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("api-ok False")


# The one job writer: chunks are written by factory/jobs/writer.py alone; items by it and by the claim of
# a batch chunk whose items were deferred (factory/batches/, which writes the lines the writer planned).
WRITES = {".add_chunks(": {"factory/jobs/writer.py"},
          ".add_item_rows(": {"factory/jobs/writer.py", "factory/batches/"}}


@pytest.mark.parametrize("call", sorted(WRITES))
def test_jobs_are_written_through_the_one_writer(call: str) -> None:
    callers = {str(p.relative_to(REPO)) for root in ("factory", "workers") for p in (REPO / root).rglob("*.py")
               if call in p.read_text()}
    allowed = WRITES[call]
    assert {c for c in callers if not any(c.startswith(a) for a in allowed)} == set()
    assert callers, "the writer itself calls it"


def _package_imports() -> dict[str, set[str]]:
    """Which top-level parts of factory/ (packages or modules) each one imports."""
    graph: dict[str, set[str]] = {}
    for path in (REPO / "factory").rglob("*.py"):
        parts = path.relative_to(REPO / "factory").parts
        own = parts[0] if len(parts) > 1 else path.stem
        targets = {m.split(".")[1] for m in _imports(path, full=True) if m.startswith("factory.")}
        graph.setdefault(own, set()).update(targets - {own})
    return graph


def test_no_import_cycles_between_factory_packages() -> None:
    graph = _package_imports()

    def reaches(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if a in reaches(b))
    assert cycles == []
    assert "jobs" in graph["personalization"] and "personalization" not in graph["jobs"]


SQL_BUILDERS = {"select", "insert", "update", "delete"}


@pytest.mark.parametrize("root", ["factory", "workers"])
def test_sql_is_built_only_in_repositories(root: str) -> None:
    """``select``/``insert``/``update``/``delete`` come from SQLAlchemy only in ``repository.py`` modules
    (and factory/db/, the database plumbing they stand on)."""
    offenders = []
    for path in (REPO / root).rglob("*.py"):
        relative = str(path.relative_to(REPO))
        if path.name == "repository.py" or relative.startswith("factory/db/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), relative)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy") \
                    and {a.name for a in node.names} & SQL_BUILDERS:
                offenders.append(relative)
    assert offenders == []
