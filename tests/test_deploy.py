"""The deployment recipe as an operator follows it: the project installed by pip, not editable, into
a fresh virtual environment; served and worked from folders that hold no checkout, with the
commands, environment and paths of deploy/systemd/ (moved under a temporary root) and the README's
`okendo` helper; and the units themselves accepted by systemd-analyze. No systemd runs here: the
units' ExecStart= and ExecReload= lines are run as systemd runs them (systemd.service(5))."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from tests.servers import PROJECT_ROOT, free_port
from tests.signing import SECRET, sample_bytes, signed_headers

UNITS = PROJECT_ROOT / "deploy" / "systemd"
WEB_UNIT, WORKER_UNIT = "okendo-connector.service", "okendo-connector-worker@.service"
# The folders the README installs to; each test moves them under a root of its own.
INSTALL_DIR, CONFIG_DIR, STATE_DIR, RUN_DIR = (
    "/opt/okendo-connector", "/etc/okendo-connector", "/var/lib/okendo-connector", "/run/okendo-connector")


# --- the installed package ---------------------------------------------------------------------


def _build_tree(destination: Path) -> Path:
    """What `pip install` reads of a checkout, copied, so that no earlier build/ folder leaks into the wheel."""
    destination.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(PROJECT_ROOT / name, destination / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(PROJECT_ROOT / "mappings", destination / "mappings", ignore=ignore)
    shutil.copytree(PROJECT_ROOT / "connector", destination / "connector", symlinks=True, ignore=ignore)
    return destination


def _python(venv: Path, code: str) -> str:
    return subprocess.run([str(venv / "bin" / "python"), "-c", code], check=True, capture_output=True, text=True,
                          cwd=venv, env={"PATH": "/usr/bin:/bin"}).stdout.strip()


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with the connector installed from the checkout, not editable.

    Its dependencies come from this test run's environment through a .pth line (installing them
    again would take minutes). A path in a .pth file is searched after the environment's own
    packages, and the .pth files found there (this checkout's editable install) are not run, so
    `connector` can only be the installed copy."""
    root = tmp_path_factory.mktemp("installed")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = Path(_python(venv, "import sysconfig; print(sysconfig.get_paths()['purelib'])"))
    (purelib / "test_run_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    built = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
                            "--no-deps", str(_build_tree(root / "src"))], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    return venv


def _files(top: Path) -> set[str]:
    return {str(Path(folder, name).relative_to(top)) for folder, _, names in os.walk(top, followlinks=True)
            for name in names if "__pycache__" not in Path(folder).parts and not name.endswith(".pyc")}


def test_the_installed_package_holds_every_file_of_the_connector_folder(installed):
    package = Path(_python(installed, "import connector, pathlib; print(pathlib.Path(connector.__file__).parent)"))
    assert installed in package.parents, f"connector was imported from {package}, not from the installed copy"
    missing = _files(PROJECT_ROOT / "connector") - _files(package)
    assert not missing, f"left out of the wheel (add them to [tool.setuptools.package-data]): {sorted(missing)}"
    shipped = package / "mappings"
    assert not shipped.is_symlink() and {"hubspot.yaml", "salesforce.yaml"} <= set(os.listdir(shipped))


# --- the units, read and run as systemd does ------------------------------------------------------


def directives(text: str) -> dict[str, list[str]]:
    """Each `Key=value` of a unit file, in order (Environment= and others may repeat)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def environment_file(path: Path) -> dict[str, str]:
    """KEY=value lines, quotes removed, later lines winning: as EnvironmentFile= and `sh -a` read them."""
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip().strip("'\"")
    return values


def expand(line: str, env: dict[str, str]) -> list[str]:
    """An Exec line's words: ${VAR} stays one word, a word that is just $VAR splits at whitespace."""
    words: list[str] = []
    for word in shlex.split(line):
        if re.fullmatch(r"\$\w+", word):
            words.extend(env.get(word[1:], "").split())
        else:
            words.append(re.sub(r"\$\{(\w+)\}", lambda match: env.get(match.group(1), ""), word))
    return words


@dataclass
class Running:
    process: subprocess.Popen
    log_path: Path

    def wait_for_log(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while text not in (log := self.log_path.read_text(errors="replace")):
            assert self.process.poll() is None and time.monotonic() < deadline, f"{text!r} never appeared:\n{log}"
            time.sleep(0.1)
        return log


class Host:
    """One host set up as the README's "Running it as a service" says, under a temporary root."""

    def __init__(self, root: Path, venv: Path, **environment: str):
        self.root, self.venv = root, venv
        for folder in (CONFIG_DIR, STATE_DIR, RUN_DIR):
            self.path(folder).mkdir(parents=True)
        self.config = self.path(CONFIG_DIR) / "config.yaml"
        shutil.copy2(PROJECT_ROOT / "config.yaml", self.config)  # unchanged: its mappings/*.yaml are the installed copies
        settings = "".join(f"{name}='{value}'\n" for name, value in environment.items())
        (self.path(CONFIG_DIR) / "environment").write_text(self.moved((UNITS / "environment.example").read_text()) + settings)

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def moved(self, text: str) -> str:
        text = text.replace(f"{INSTALL_DIR}/bin/", f"{self.venv}/bin/")
        for folder in (CONFIG_DIR, STATE_DIR, RUN_DIR):
            text = text.replace(folder, str(self.path(folder)))
        return text

    def unit(self, name: str) -> dict[str, list[str]]:
        return directives(self.moved((UNITS / name).read_text()))

    def environment(self, unit: dict[str, list[str]]) -> dict[str, str]:
        """A service's environment: systemd's few variables, Environment=, then EnvironmentFile=, which wins."""
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(self.path(STATE_DIR))}
        for assignments in unit.get("Environment", []):
            env.update(word.split("=", 1) for word in shlex.split(assignments))
        for path in unit.get("EnvironmentFile", []):
            env.update(environment_file(Path(path.removeprefix("-"))))
        return env

    def okendo(self, *args: str) -> subprocess.CompletedProcess:
        """The README's `okendo` helper (a connector command with the service's environment file), as root
        runs it, but without `runuser -u okendo-connector --`: this test's user is the service's."""
        readme = (PROJECT_ROOT / "README.md").read_text()
        helper = re.search(r"^okendo\(\) \{.*?\}$", readme, re.M | re.S)
        assert helper, "README.md lost its `okendo() { ... }` helper"
        function = self.moved(helper.group(0)).replace("runuser -u okendo-connector -- ", "")
        return subprocess.run(["bash", "-c", f'{function}\nokendo "$@"', "bash", *args], capture_output=True,
                              text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})

    @contextmanager
    def start(self, unit_name: str, instance: str = "") -> Iterator[Running]:
        unit = self.unit(unit_name)
        log_path = self.root / f"{unit_name.replace('@', f'@{instance}')}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(expand(unit["ExecStart"][0], self.environment(unit)),
                                       cwd=unit["WorkingDirectory"][0], env=self.environment(unit),
                                       stdout=log, stderr=subprocess.STDOUT)
        try:
            yield Running(process, log_path)
        finally:
            process.send_signal(signal.SIGTERM)  # systemctl stop: KillSignal=SIGTERM
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()

    def reload(self, unit_name: str, running: Running) -> subprocess.CompletedProcess:
        """systemctl reload: ExecReload=, with $MAINPID."""
        unit = self.unit(unit_name)
        env = {**self.environment(unit), "MAINPID": str(running.process.pid)}
        return subprocess.run(expand(unit["ExecReload"][0], env), env=env, cwd=unit["WorkingDirectory"][0],
                              capture_output=True, text=True, timeout=60)


def _postgres_or_default(db_url: str) -> dict[str, str]:
    """SQLite: the environment file's own ledger, in the state directory; PostgreSQL: this test's schema."""
    return {"CONNECTOR_DATABASE_URL": db_url} if db_url.startswith("postgresql") else {}


def _wait_until_serving(base_url: str, web: Running) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        assert web.process.poll() is None and time.monotonic() < deadline, "not serving:\n" + web.log_path.read_text()
        time.sleep(0.1)


def _post_review(base_url: str, message_id: str) -> requests.Response:
    body = sample_bytes("review.create")
    return requests.post(f"{base_url}/webhooks/okendo", data=body, headers=signed_headers(body, message_id), timeout=10)


def test_the_web_unit_serves_the_installed_package_and_reloads_through_its_pidfile(installed, tmp_path, db_url):
    port = free_port()
    host = Host(tmp_path, installed, BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="1", OKENDO_WEBHOOK_SECRETS=SECRET,
                **_postgres_or_default(db_url))
    migrated = host.okendo("db", "upgrade")
    assert migrated.returncode == 0 and "ledger at revision" in migrated.stdout, migrated.stdout + migrated.stderr
    config_folder_before = _files(host.path(CONFIG_DIR))
    base_url = f"http://127.0.0.1:{port}"

    with host.start(WEB_UNIT) as web:
        _wait_until_serving(base_url, web)
        shipped = int(re.search(r"configuration valid: (\d+) mapping\(s\) from " + re.escape(str(host.config)),
                                web.wait_for_log("configuration valid")).group(1))
        stored = _post_review(base_url, "msg_deploy_1")
        assert stored.status_code == 202
        assert sum(requests.get(f"{base_url}/api/stats", timeout=10).json()["events_by_state"].values()) == 1
        page = requests.get(f"{base_url}/status/events/{stored.json()['event_id']}", timeout=10)
        assert page.status_code == 200 and "msg_deploy_1" in page.text  # the installed templates
        stylesheet = requests.get(f"{base_url}/status/static/status.css", timeout=10)
        assert stylesheet.status_code == 200 and stylesheet.headers["content-type"].startswith("text/css")
        assert stylesheet.content
        pidfile = Path(host.unit(WEB_UNIT)["PIDFile"][0])
        assert int(pidfile.read_text()) == web.process.pid  # the master itself: `connector serve` exec'd gunicorn

        tree = yaml.safe_load(host.config.read_text())
        tree["mappings"]["overrides"] = {"salesforce_review": {"enabled": False}}
        host.config.write_text(yaml.safe_dump(tree))
        reloaded = host.reload(WEB_UNIT, web)
        assert reloaded.returncode == 0 and f"pid {web.process.pid}" in reloaded.stdout, reloaded.stderr
        web.wait_for_log(f"configuration reloaded: {shipped - 1} mapping(s)")
        web.wait_for_log(f"serving with {shipped - 1} mapping(s)")

        tree["mappings"]["overrides"] = {"salesforce_review": {"enabled": "sometimes"}}
        host.config.write_text(yaml.safe_dump(tree))
        refused = host.reload(WEB_UNIT, web)
        assert refused.returncode == 1 and "salesforce_review" in refused.stderr  # `systemctl reload` fails, saying why
        assert web.process.poll() is None
    # ProtectSystem=strict: the service may write only its state and runtime folders, never beside its config.
    assert _files(host.path(CONFIG_DIR)) == config_folder_before


def test_worker_units_deliver_for_a_web_server_without_embedded_workers(installed, tmp_path, db_url):
    port = free_port()
    host = Host(tmp_path, installed, BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="1", OKENDO_WEBHOOK_SECRETS=SECRET,
                CONNECTOR_WORKER__EMBEDDED="false", **_postgres_or_default(db_url))
    assert host.okendo("db", "upgrade").returncode == 0
    base_url = f"http://127.0.0.1:{port}"

    with host.start(WEB_UNIT) as web, host.start(WORKER_UNIT, "1") as first, host.start(WORKER_UNIT, "2") as second:
        _wait_until_serving(base_url, web)
        for worker in (first, second):
            worker.wait_for_log("running; SIGHUP reloads")
        assert _post_review(base_url, "msg_scaled_1").status_code == 202

        deadline = time.monotonic() + 30
        while (stats := requests.get(f"{base_url}/api/stats", timeout=10).json())["queue_depth"] or stats["unplanned"]:
            assert time.monotonic() < deadline, f"the workers never delivered: {stats}"
            time.sleep(0.2)
        assert sum(states.get("delivered", 0) for states in stats["deliveries_by_destination"].values()) >= 1
        alive = [worker for worker in stats["workers"] if worker["alive"]]
        assert {(worker["kind"], worker["pid"]) for worker in alive} == {
            ("standalone", first.process.pid), ("standalone", second.process.pid)}  # none inside gunicorn
        assert len({worker["config_hash"] for worker in alive}) == 1 and stats["warnings"] == []
        assert "okendo_connector_workers_alive 2.0" in requests.get(f"{base_url}/metrics", timeout=10).text

        reloaded = host.reload(WORKER_UNIT, first)
        assert reloaded.returncode == 0, reloaded.stderr
        first.wait_for_log("configuration reloaded")
        assert first.process.poll() is None


def test_serve_migrates_then_runs_gunicorn_with_its_options_and_passes_the_rest_through(tmp_path, db_url):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"database": {"url": db_url}, "receiver": {"secrets": "${OKENDO_WEBHOOK_SECRETS}"}}))
    port, log_path = free_port(), tmp_path / "serve.log"
    env = {key: value for key, value in os.environ.items() if key not in ("BIND", "WEB_CONCURRENCY", "CONNECTOR_PIDFILE")}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "connector.cli", "--config", str(config), "serve", "--migrate",
             "--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "2",
             "--", "--access-logformat", "served %(s)s %(U)s"],
            cwd=tmp_path, env={**env, "OKENDO_WEBHOOK_SECRETS": SECRET}, stdout=log, stderr=subprocess.STDOUT)
    serve = Running(process, log_path)
    try:
        _wait_until_serving(f"http://127.0.0.1:{port}", serve)
        assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200  # migrated
        log = serve.wait_for_log("served 200 /readyz")  # gunicorn's own option, after --
        assert "ledger at revision" in log and f"Listening at: http://127.0.0.1:{port} ({process.pid})" in log
        serve.wait_for_log("Booting worker")
        assert serve.log_path.read_text().count("Booting worker") == 2
        assert int((tmp_path / "data" / "gunicorn.pid").read_text()) == process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


# --- the unit files themselves -----------------------------------------------------------------


@pytest.fixture
def unit_files(installed, tmp_path) -> list[Path]:
    """The shipped units, their ExecStart= pointed at the installed connector (verify checks it exists)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    copies = []
    for unit in sorted(UNITS.glob("okendo-connector*")):
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace(f"{INSTALL_DIR}/bin/", f"{installed}/bin/"))
        copies.append(copy)
    return copies


def test_systemd_analyze_verifies_the_units(unit_files):
    assert {unit.name for unit in unit_files} == {WEB_UNIT, WORKER_UNIT, "okendo-connector.target"}
    verified = subprocess.run(["systemd-analyze", "verify", *map(str, unit_files)], capture_output=True, text=True,
                              timeout=60)
    output = verified.stdout + verified.stderr
    assert verified.returncode == 0 and "okendo-connector" not in output, output


@pytest.mark.parametrize("name", [WEB_UNIT, WORKER_UNIT])
def test_the_services_are_sandboxed(unit_files, name):
    # systemd's own exposure score, from 0 (locked down) to 10 (unprotected): 2.0 at most (--threshold counts tenths).
    [unit] = [path for path in unit_files if path.name == name]
    scored = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=20", str(unit)],
                            capture_output=True, text=True, timeout=60)
    assert scored.returncode == 0, scored.stdout[-2000:] + scored.stderr
