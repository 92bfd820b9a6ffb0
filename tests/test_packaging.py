"""The distribution installs one import package, ``agentfn``, and nothing at the top level else.

The folders ``events/``, ``brokers/``, ``functions/`` and ``inference/`` stay at the top of the
repository and install as ``agentfn.events`` and so on (setuptools ``package-dir``). Names such
as ``events`` belong to other distributions on PyPI (and to users' own folders): installed side
by side, each must import as itself.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _installed_packages() -> dict[str, Path]:
    """Each package the distribution installs -> the folder it comes from."""
    setuptools = PYPROJECT["tool"]["setuptools"]
    mapping: dict[str, str] = setuptools["package-dir"]
    found = {}
    for package in setuptools["packages"]:
        # The nearest mapped parent decides the folder (agentfn.brokers.cesql -> brokers/cesql).
        parts = package.split(".")
        for cut in range(len(parts), 0, -1):
            parent = ".".join(parts[:cut])
            if parent in mapping:
                found[package] = ROOT / mapping[parent] / Path(*parts[cut:])
                break
        else:
            raise AssertionError(f"{package} is under no package-dir entry")
    return found


def test_every_package_folder_is_installed() -> None:
    # A folder with an __init__.py that the list misses would be absent from the wheel while
    # the editable install, which maps whole folders, still finds it.
    installed = _installed_packages()
    folders = {
        init.parent
        for top in {
            ROOT / "agentfn",
            *(ROOT / d for d in PYPROJECT["tool"]["setuptools"]["package-dir"].values()),
        }
        for init in top.rglob("__init__.py")
    }
    assert set(installed.values()) == folders
    assert all(package.startswith("agentfn.") or package == "agentfn" for package in installed)


def test_the_command_and_the_type_checker_use_the_package_names() -> None:
    assert PYPROJECT["project"]["scripts"] == {"agentfn": "agentfn.functions.cli:main"}
    assert PYPROJECT["tool"]["mypy"]["packages"] == ["agentfn"]


def test_the_bare_names_are_banned_imports() -> None:
    banned = PYPROJECT["tool"]["ruff"]["lint"]["flake8-tidy-imports"]["banned-api"]
    assert {"events", "brokers", "functions", "inference"} <= set(banned)


def _pip(*args: str, cwd: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        if "No matching distribution" in done.stderr or "Could not find" in done.stderr:
            pytest.skip(f"a package index is needed here: {done.stderr.strip()[-300:]}")
        raise AssertionError(f"pip {' '.join(args)} failed:\n{done.stderr[-2000:]}")


@pytest.mark.slow
def test_agentfn_and_the_pypi_events_package_import_side_by_side(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    _pip("wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(ROOT), cwd=tmp_path)
    _pip("download", "--quiet", "--no-deps", "--dest", str(wheels), "events==0.5", cwd=tmp_path)
    (ours,) = wheels.glob("agentfn-*.whl")
    tops = {name.split("/", 1)[0] for name in zipfile.ZipFile(ours).namelist()}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"agentfn"}

    # A fresh environment with both wheels; agentfn's dependencies come from this one's
    # site-packages through a .pth line (its editable agentfn is not: .pth files in a directory
    # a .pth line adds are not read).
    env = tmp_path / "env"
    venv.EnvBuilder(with_pip=True).create(env)
    python = env / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         *map(str, sorted(wheels.iterdir()))],
        check=True,
        timeout=300,
    )  # fmt: skip
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "agentfn-test-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    probe = """
import events, agentfn.events, agentfn
from events import Events  # the PyPI package's own API
assert events.__file__.startswith(SITE), events.__file__
assert agentfn.events.__file__.startswith(SITE), agentfn.events.__file__
assert agentfn.events is not events
seen = []
hub = Events(("on_change",))
hub.on_change += seen.append
hub.on_change("ok")
event = agentfn.CloudEvent.new("com.example.checked", "/tests", {"ok": True})
assert seen == ["ok"] and event.data == {"ok": True}
print("both")
"""
    done = subprocess.run(
        [str(python), "-c", f"SITE = {str(site)!r}\n{probe}"],
        cwd=tmp_path,  # not the repository: its folders must not be what is imported
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "both"
