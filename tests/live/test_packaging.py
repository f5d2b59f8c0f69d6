"""The two distributions install like any Python package's, from their wheels.

``pip wheel .`` is the whole server: its code, web pages, migrations and default settings.
Installed into a fresh virtualenv, ``authserver`` migrates, makes a key and serves, from a
directory that is not the repository. ``authserver/resource`` builds the resource-server
library alone (``authserver-resource``): it needs PyJWT and cryptography, nothing of the
server, and verifies that installed server's tokens. Each wheel is built as a user builds
it (``pip wheel``, with build isolation) from a clean copy of the sources.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests

from tests.support.live_server import free_port

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.xdist_group("packaging")

# Nothing a resource server imports may load these: the server's web stack, its database
# and migrations, its OAuth and JOSE libraries, its HTTP front, its password hashing.
SERVER_MODULES = frozenset({
    "alembic", "argon2", "authlib", "click", "flask", "flask_migrate", "flask_sqlalchemy",
    "granian", "jinja2", "joserfc", "psycopg", "redis", "requests", "sqlalchemy", "werkzeug",
})
# The distributions behind them (werkzeug and jinja2 come with Flask).
SERVER_DISTRIBUTIONS = frozenset({
    "alembic", "argon2-cffi", "authlib", "click", "flask", "flask-migrate", "flask-sqlalchemy",
    "granian", "jinja2", "joserfc", "psycopg", "psycopg-binary", "redis", "requests",
    "sqlalchemy", "werkzeug",
})
BUILD_LEFTOVERS = ("__pycache__", "*.pyc", "build", "*.egg-info")


@dataclass(frozen=True)
class Wheels:
    server: Path
    resource: Path


@dataclass(frozen=True)
class Venv:
    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    def run_python(self, code: str, cwd: Path, env: dict[str, str] | None = None,
                   input: str | None = None) -> str:
        result = subprocess.run([str(self.python), "-c", code], cwd=cwd, env=env or user_env(),
                                input=input, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout


def run_together(commands: Sequence[Sequence[str]], timeout: float = 300) -> None:
    """Run the commands side by side; fail with the output of the first that fails."""
    processes = [subprocess.Popen(list(command), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
                 for command in commands]
    outputs = [process.communicate(timeout=timeout)[0] for process in processes]
    for command, process, output in zip(commands, processes, outputs, strict=True):
        assert process.returncode == 0, f"{' '.join(command)} failed:\n{output}"


def user_env(**settings: str) -> dict[str, str]:
    """The environment of a user who never saw the repository: no AUTHSERVER_* left over from
    the test run, no PYTHONPATH or active virtualenv, plus the settings given."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("AUTHSERVER_", "PYTHON", "VIRTUAL_ENV"))}
    return {**env, **settings}


# Python code printing which of SERVER_MODULES the interpreter has loaded so far.
PRINT_SERVER_MODULES_LOADED = (
    "import json, sys\n"
    f"server = {sorted(SERVER_MODULES)!r}\n"
    "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(server))))\n"
)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Wheels:
    """Both wheels, built from a copy of the sources (no stale build/ folder, no leftovers
    in the working tree)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("authserver", "migrations", "config"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns(*BUILD_LEFTOVERS))
    out = tmp_path_factory.mktemp("wheels")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w"]
    run_together([[*pip_wheel, str(out / "server"), str(src)],
                  [*pip_wheel, str(out / "resource"), str(src / "authserver" / "resource")]])
    (server,) = (out / "server").glob("authserver-*.whl")
    (resource,) = (out / "resource").glob("authserver_resource-*.whl")
    return Wheels(server=server, resource=resource)


@pytest.fixture(scope="module")
def venvs(wheels: Wheels, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Venv]:
    """A fresh virtualenv per wheel, each with its wheel and the dependencies it declares."""
    made = {name: Venv(tmp_path_factory.mktemp(f"venv-{name}")) for name in ("server",
                                                                             "resource")}
    run_together([[sys.executable, "-m", "venv", "--clear", "--without-pip", str(v.root)]
                  for v in made.values()])
    # This process's pip installs into each (pip --python): the wheels' own dependencies,
    # resolved from the package index as a user's `pip install` resolves them.
    run_together([[sys.executable, "-m", "pip", "--python", str(made[name].python), "install",
                   "--quiet", "--disable-pip-version-check", str(getattr(wheels, name))]
                  for name in made])
    return made


def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def source_files(folder: Path) -> set[str]:
    """The files under ``folder`` (relative, with /), without caches and build leftovers."""
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
            and not any(part == "build" or part.endswith(".egg-info") for part in path.parts)}


def test_the_server_wheel_holds_code_pages_migrations_and_default_settings(
        wheels: Wheels) -> None:
    names = wheel_names(wheels.server)
    expected = {f"authserver/{name}" for name in source_files(REPO / "authserver")
                if name != "resource/pyproject.toml"}
    expected |= {f"authserver/migrations/{name}" for name in source_files(REPO / "migrations")}
    expected.add("authserver/default_config/default.toml")
    assert expected - names == set(), "missing from the wheel (pyproject.toml's packages?)"
    top_level = {name.split("/", 1)[0] for name in names}
    assert top_level == {"authserver", wheels.server.name.split("-py3")[0] + ".dist-info"}


def test_the_resource_wheel_is_the_library_alone_and_needs_nothing_of_the_server(
        wheels: Wheels, venvs: dict[str, Venv], tmp_path: Path) -> None:
    names = wheel_names(wheels.resource)
    library = {f"authserver/resource/{name}" for name in source_files(REPO / "authserver"
                                                                       / "resource")
               if name.endswith(".py")}
    assert {name for name in names if ".dist-info/" not in name} == library
    assert "authserver/__init__.py" not in names  # a portion of the authserver namespace

    venv = venvs["resource"]
    found = json.loads(venv.run_python(
        "import importlib.metadata as m, json\n"
        "print(json.dumps({'requires': m.requires('authserver-resource'),"
        " 'installed': sorted(d.metadata['Name'].lower() for d in m.distributions())}))",
        cwd=tmp_path))
    required = {re.split(r"[\[<>=;! ]", requirement, maxsplit=1)[0].lower()
                for requirement in found["requires"] if "extra ==" not in requirement}
    assert required == {"pyjwt", "cryptography"}
    assert {"authserver-resource", "pyjwt", "cryptography"} <= set(found["installed"])
    assert SERVER_DISTRIBUTIONS & set(found["installed"]) == set()
    assert "authserver" not in found["installed"]

    modules = ["authserver.resource", *sorted(
        "authserver.resource." + Path(name).stem for name in library
        if not name.endswith("__init__.py"))]
    site = venv.run_python("import sysconfig; print(sysconfig.get_paths()['purelib'])",
                           cwd=tmp_path).strip()
    for module in modules:  # each in a fresh interpreter: its own import graph
        loaded = json.loads(venv.run_python(
            f"import {module}, authserver\n"
            "assert getattr(authserver, '__file__', None) is None, authserver.__file__\n"
            f"assert {module}.__file__.startswith({site!r}), {module}.__file__\n"
            + PRINT_SERVER_MODULES_LOADED, cwd=tmp_path))
        assert loaded == [], f"importing {module} loads {loaded}"


def test_the_installed_server_migrates_makes_a_key_and_serves_from_any_directory(
        venvs: dict[str, Venv], tmp_path: Path) -> None:
    venv = venvs["server"]
    home = tmp_path / "srv"  # not the repository: nothing here but what the server makes
    home.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = user_env(
        PATH=f"{venv.bin}{os.pathsep}{os.environ.get('PATH', '')}",
        AUTHSERVER_ISSUER=url,
        AUTHSERVER_DATABASE_URL=f"sqlite:///{home / 'authserver.sqlite3'}",
        AUTHSERVER_KEYS_DIR=str(home / "keys"),
        AUTHSERVER_SECRET_KEY=secrets.token_urlsafe(32),
    )
    site = venv.run_python("import sysconfig; print(sysconfig.get_paths()['purelib'])",
                           cwd=home, env=env).strip()
    where = json.loads(venv.run_python(
        "import json, authserver, authserver.app as a, authserver.config as c\n"
        "print(json.dumps([authserver.__file__, a.MIGRATIONS_DIR, str(c.SHIPPED_CONFIG_FILE)]))",
        cwd=home, env=env))
    package, migrations, shipped_config = where
    assert package == f"{site}/authserver/__init__.py"  # the wheel's copy, not the repo's
    assert migrations == f"{site}/authserver/migrations"
    assert shipped_config == f"{site}/authserver/default_config/default.toml"

    def cli(*args: str) -> str:
        result = subprocess.run([str(venv.bin / "authserver"), *args], cwd=home, env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"authserver {' '.join(args)}: {result.stderr}"
        return result.stdout

    assert "database upgraded" in cli("db", "upgrade")
    assert "key" in cli("keys", "ensure")
    log_path = home / "serve.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [str(venv.bin / "authserver"), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_serving(url, server, log_path)

        login = requests.get(f"{url}/login", timeout=10)
        assert login.status_code == 200, login.text
        assert login.headers["Content-Type"].startswith("text/html")
        assert '<form method="post" action="/login"' in login.text
        stylesheets = re.findall(r'<link rel="stylesheet" href="([^"]+)"', login.text)
        assert stylesheets, login.text
        for href in stylesheets:
            css = requests.get(urljoin(f"{url}/login", href), timeout=10)
            assert css.status_code == 200
            assert css.headers["Content-Type"].startswith("text/css")
            assert css.content == (REPO / "authserver/web/static/style.css").read_bytes()

        jwks = requests.get(f"{url}/.well-known/jwks.json", timeout=10)
        assert jwks.status_code == 200
        keys = jwks.json()["keys"]
        assert keys and all(key["kid"] and key["kty"] == "RSA" and "d" not in key
                            for key in keys)
        discovery = requests.get(f"{url}/.well-known/openid-configuration", timeout=10).json()
        assert discovery["issuer"] == url
        assert discovery["jwks_uri"] == f"{url}/.well-known/jwks.json"

        # A resource server with only authserver-resource verifies this server's token.
        machine = json.loads(cli("clients", "create", "--name", "Reports", "--scope",
                                 "reports", "--json"))
        token = requests.post(f"{url}/oauth/token", timeout=10,
                              data={"grant_type": "client_credentials", "scope": "reports"},
                              auth=(machine["client_id"], machine["client_secret"]))
        assert token.status_code == 200, token.text
        resource = venvs["resource"]
        verified, loaded = map(json.loads, resource.run_python(
            "import json, sys\n"
            "from authserver.resource import TokenVerifier\n"
            f"claims = TokenVerifier({url!r}, {url!r}).verify(sys.stdin.read())\n"
            "print(json.dumps({'sub': claims.sub, 'scope': sorted(claims.scope)}))\n"
            + PRINT_SERVER_MODULES_LOADED, cwd=tmp_path, input=token.json()["access_token"]
        ).splitlines())
        assert verified == {"sub": machine["client_id"], "scope": ["reports"]}
        assert loaded == [], f"verifying a token loads {loaded}"
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert server.returncode == 0, log_path.read_text(errors="replace")  # SIGTERM: a clean stop


def wait_until_serving(url: str, server: subprocess.Popen[bytes], log_path: Path) -> None:
    """Return once the server answers its JWKS; fail after 30 s or if it exits."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.poll() is None, log_path.read_text(errors="replace")
        try:
            if requests.get(f"{url}/.well-known/jwks.json", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    pytest.fail("the server did not answer within 30 s: " + log_path.read_text(errors="replace"))
