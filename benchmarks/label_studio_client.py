"""A tiny REST client for Label Studio 1.23.2, the annotation UI the integration tests drive.

The tests (and the push benchmark) act as the human annotator: they create projects, upload
images, connect the service as the project's ML backend and submit annotations, so the service
sees exactly the requests and webhooks a real Label Studio sends. The official SDK
(label-studio-sdk) lives in Label Studio's own venv, away from the project's dependencies, so
this speaks plain HTTP with requests. Every call raises :class:`LabelStudioError`, carrying the
response text, on a non-2xx answer.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests


class LabelStudioError(RuntimeError):
    """A non-2xx answer; the message holds the method, URL, status and response body."""


class LabelStudio:
    """The REST API of one Label Studio server, authenticated with a legacy API token.

    Args:
        url: The server's base URL, e.g. ``http://127.0.0.1:8089``.
        token: A legacy API token (``Authorization: Token ...``), e.g. the fixture's
            ``LABEL_STUDIO_USER_TOKEN``.
        timeout: Seconds per request. Generous: ``GET /api/tasks/{id}`` and ``/next/`` may call
            the connected ML backend's ``/predict`` synchronously before answering.
    """

    def __init__(self, url: str, token: str, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request; return the decoded JSON body (None when there is none).

        Raises:
            LabelStudioError: On any non-2xx status, with the response text, so a failing test
                shows Label Studio's own validation message.
        """
        kwargs.setdefault("timeout", self.timeout)
        response = self.session.request(method, f"{self.url}{path}", **kwargs)
        if not response.ok:
            raise LabelStudioError(
                f"{method} {path} -> {response.status_code}: {response.text[:2000]}"
            )
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    # Projects

    def create_project(self, title: str, label_config: str, **fields: Any) -> dict[str, Any]:
        """Create a project; ``fields`` are any other project fields (e.g. ``sampling``).

        Titles need at least 3 characters (Label Studio answers 400 otherwise).
        """
        return self.request(
            "POST", "/api/projects", json={"title": title, "label_config": label_config, **fields}
        )

    def project(self, project_id: int) -> dict[str, Any]:
        """The project as Label Studio sees it now (``model_version``, ``sampling``, ...)."""
        return self.request("GET", f"/api/projects/{project_id}")

    def patch_project(self, project_id: int, **fields: Any) -> dict[str, Any]:
        """Change project fields, e.g. ``model_version="v3", sampling="Uncertainty sampling"``.

        A ``model_version`` must already exist as a prediction's or a live backend's version
        (400 otherwise). Sends a ``PROJECT_UPDATED`` webhook to a connected backend.
        """
        return self.request("PATCH", f"/api/projects/{project_id}", json=fields)

    # Tasks

    def import_files(self, project: int, files: list[tuple[str, bytes]]) -> int:
        """Upload files (one task each) as a multipart form; return how many tasks were made.

        Each task's data maps the config's single ``$value`` to a relative URL that needs the
        token to download, ``/data/upload/<project>/<8 hex>-<name>``.
        """
        form = [(f"file{i}", (name, data)) for i, (name, data) in enumerate(files)]
        return int(
            self.request("POST", f"/api/projects/{project}/import", files=form)["task_count"]
        )

    def import_tasks(self, project: int, tasks: list[dict[str, Any]]) -> int:
        """Import JSON tasks (``[{"data": {...}}, ...]``); return how many tasks were made."""
        return int(
            self.request("POST", f"/api/projects/{project}/import", json=tasks)["task_count"]
        )

    def tasks(self, project: int, page_size: int = 100) -> list[dict[str, Any]]:
        """Every task of the project, with annotations and predictions (``fields=all``)."""
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self.request(
                "GET",
                "/api/tasks",
                params={"project": project, "page": page, "page_size": page_size, "fields": "all"},
            )
            out.extend(body["tasks"])
            if not body["tasks"] or len(out) >= body["total"]:
                return out
            page += 1

    def task(self, task_id: int) -> dict[str, Any]:
        """One task. Side effect: asks a connected backend to predict it if it has no prediction."""
        return self.request("GET", f"/api/tasks/{task_id}")

    def next_task(self, project: int) -> dict[str, Any]:
        """The labeling stream's next task for this user (``queue`` says why it was chosen).

        The task gets locked for ``TASK_LOCK_TTL`` seconds: until then, or until it is annotated,
        the same task comes back.
        """
        return self.request("GET", f"/api/projects/{project}/next/")

    # Annotations

    @staticmethod
    def choice_result(from_name: str, to_name: str, choice: str) -> list[dict[str, Any]]:
        """The ``result`` list of a single-choice annotation or prediction."""
        return [
            {
                "from_name": from_name,
                "to_name": to_name,
                "type": "choices",
                "value": {"choices": [choice]},
            }
        ]

    def annotate(
        self,
        task_id: int,
        from_name: str,
        to_name: str,
        choice: str,
        lead_time: float = 1.0,
        **fields: Any,
    ) -> int:
        """Submit a single-choice annotation as the token's user; return its id.

        ``fields`` go into the body as well (e.g. ``was_cancelled=True`` for a skip). Sends an
        ``ANNOTATION_CREATED`` webhook and releases the user's lock on the task.
        """
        body = {
            "result": self.choice_result(from_name, to_name, choice),
            "lead_time": lead_time,
            **fields,
        }
        return int(self.request("POST", f"/api/tasks/{task_id}/annotations/", json=body)["id"])

    def update_annotation(
        self, annotation_id: int, choice: str, from_name: str = "label", to_name: str = "image"
    ) -> dict[str, Any]:
        """Change an annotation's choice; sends an ``ANNOTATION_UPDATED`` webhook."""
        body = {"result": self.choice_result(from_name, to_name, choice)}
        return self.request("PATCH", f"/api/annotations/{annotation_id}/", json=body)

    def delete_annotation(self, annotation_id: int) -> None:
        """Delete an annotation; the ``ANNOTATIONS_DELETED`` webhook carries only its id."""
        self.request("DELETE", f"/api/annotations/{annotation_id}/")

    def annotations(self, task_id: int) -> list[dict[str, Any]]:
        """The task's annotations."""
        return self.request("GET", f"/api/tasks/{task_id}/annotations/")

    # ML backend and predictions

    def connect_ml(
        self, project: int, url: str, title: str = "activestream", **auth: Any
    ) -> dict[str, Any]:
        """Connect an ML backend to the project; return the backend record (``state``: "CO").

        Label Studio calls ``{url}/health`` and ``{url}/setup`` twice before answering (400 if
        /health fails), creates a send-all-actions webhook to ``{url}/webhook`` and, when the
        project's ``model_version`` is empty, sets it to ``title``. ``auth`` holds any other
        fields, e.g. ``auth_method="BASIC_AUTH", basic_auth_user=..., basic_auth_pass=...``,
        ``extra_params={...}`` or ``timeout``.
        """
        body = {"url": url, "project": project, "title": title, "is_interactive": False, **auth}
        return self.request("POST", "/api/ml", json=body)

    def ml_backends(self, project: int) -> list[dict[str, Any]]:
        """The project's ML backends, with their ``state`` and ``model_version``."""
        return self.request("GET", "/api/ml", params={"project": project})

    def webhooks(self, project: int) -> list[dict[str, Any]]:
        """The project's webhooks (connect_ml creates one to ``{url}/webhook``)."""
        return self.request("GET", "/api/webhooks/", params={"project": project})

    def predictions(self, project: int) -> list[dict[str, Any]]:
        """Every prediction in the project (``task``, ``score``, ``model_version``, ``result``)."""
        return self.request("GET", "/api/predictions/", params={"project": project})

    def import_predictions(self, project: int, predictions: list[dict[str, Any]]) -> int:
        """Store predictions in bulk (``[{"task", "result", "score", "model_version"}, ...]``).

        Returns how many were created. ``patch_project(model_version=V)`` is refused (400) until
        some prediction or live backend has version V.
        """
        path = f"/api/projects/{project}/import/predictions"
        return int(self.request("POST", path, json=predictions)["created"])

    def retrieve_predictions(self, project: int, task_ids: list[int]) -> dict[str, Any]:
        """Ask the connected backend to predict these tasks (the Data Manager's action)."""
        return self.request(
            "POST",
            "/api/dm/actions",
            params={"id": "retrieve_tasks_predictions", "project": project},
            json={"selectedItems": {"all": False, "included": task_ids}},
        )

    def download(self, path: str) -> bytes:
        """Bytes of a task's relative media URL, e.g. ``/data/upload/1/ab12cd34-a.png``."""
        response = self.session.get(f"{self.url}{path}", timeout=self.timeout)
        if not response.ok:
            raise LabelStudioError(f"GET {path} -> {response.status_code}: {response.text[:2000]}")
        return response.content


# The server, as the session fixture runs it

# A fixed legacy API token (40 hex digits, like Label Studio's own); the admin user gets it at the
# first start of a data dir, so tests and the service under test know it in advance.
LABEL_STUDIO_TOKEN = "a5e1ab0c0ffee5eed0ac71e5712ea3500a5e1ab0"
LABEL_STUDIO_USERNAME = "admin@example.com"
LABEL_STUDIO_PASSWORD = "Adm1nPassw0rd!"
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class LabelStudioServer:
    """A running Label Studio: where it answers, how to authenticate, where it logs."""

    url: str
    token: str
    log: Path
    data_dir: Path
    username: str
    password: str
    process: subprocess.Popen[bytes]
    database: str = "sqlite"  # or "postgresql"

    def client(self) -> LabelStudio:
        """A REST client authenticated as the admin user."""
        return LabelStudio(self.url, self.token)

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's log, for failure messages."""
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def _await_ready(
    what: str,
    process: subprocess.Popen[bytes],
    ready: Callable[[], str | None],
    timeout: float,
    log: Path,
    tail: Callable[[], str],
    interval: float = 0.25,
) -> None:
    """Wait until ``ready()`` says None (else why not yet); a clear error if it never does.

    Raises:
        RuntimeError: If the process exits first, or ``timeout`` seconds pass; with its log.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited ({process.returncode}); {log}:\n{tail()}")
        problem = ready()
        if problem is None:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{what} was not ready in {timeout:.0f} s ({problem}); {log}:\n{tail()}"
            )
        time.sleep(interval)


def label_studio_bin() -> str:
    """The ``label-studio`` executable: ``$LABEL_STUDIO_BIN``, else scripts/label_studio.sh's.

    test.sh exports it; running the script here (it builds the venv on first use, ~70 s) keeps a
    single test file runnable by hand with plain ``pytest``.
    """
    exe = os.environ.get("LABEL_STUDIO_BIN")
    if not exe:
        done = subprocess.run(
            ["bash", str(ROOT / "scripts" / "label_studio.sh")],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"scripts/label_studio.sh failed:\n{done.stderr[-4000:]}")
        exe = done.stdout.strip().splitlines()[-1]
    if not os.access(exe, os.X_OK):
        raise RuntimeError(f"LABEL_STUDIO_BIN={exe} is not an executable")
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _template_db(exe: str) -> Path:
    """Where a migrated database with this admin user is kept, beside the Label Studio venv.

    A fresh database takes ~70 s of migrations on 2 cores; a copy of one starts in ~6 s. The key
    holds the credentials baked into it; deleting the venv deletes it too.
    """
    key = hashlib.sha256(f"{LABEL_STUDIO_USERNAME}:{LABEL_STUDIO_TOKEN}".encode()).hexdigest()
    return Path(exe).resolve().parents[1] / f"template-{key[:12]}.sqlite3"


def _save_template(db: Path, template: Path) -> None:
    """Snapshot the freshly migrated database (sqlite's backup API: safe while it is open)."""
    partial = template.with_suffix(f".{os.getpid()}.partial")
    with closing(sqlite3.connect(db)) as src, closing(sqlite3.connect(partial)) as dst:
        src.backup(dst)
    partial.replace(template)


# A throwaway PostgreSQL, the database production Label Studio runs on

POSTGRES_DB = "labelstudio"
POSTGRES_USER = "postgres"  # the cluster's superuser; loopback connections need no password


@dataclass(frozen=True)
class PostgresServer:
    """A running throwaway PostgreSQL cluster: where it answers, its database, its log."""

    host: str
    port: int
    name: str
    user: str
    root: Path
    log: Path
    process: subprocess.Popen[bytes]

    def label_studio_env(self) -> dict[str, str]:
        """Label Studio's settings for this database (core/settings/base.py, DJANGO_DB)."""
        return {
            "DJANGO_DB": "default",  # Label Studio's name for its PostgreSQL settings
            "POSTGRE_NAME": self.name,
            "POSTGRE_USER": self.user,
            "POSTGRE_PASSWORD": "unused",  # trust authentication: any password is accepted
            "POSTGRE_HOST": self.host,
            "POSTGRE_PORT": str(self.port),
        }

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's log, for failure messages."""
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def postgres_bin() -> Path:
    """The directory holding PostgreSQL's ``initdb``, ``postgres`` and ``createdb``.

    The one of ``initdb`` on PATH (symlinks resolved), else the newest
    ``/usr/lib/postgresql/<version>/bin`` (Debian's packages put them there, off PATH).

    Raises:
        RuntimeError: If neither holds all three, saying what to install.
    """
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", path.parent.name)) or (0,)

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for bindir in candidates:
        if all(os.access(bindir / b, os.X_OK) for b in ("initdb", "postgres", "createdb")):
            return bindir
    raise RuntimeError(
        "PostgreSQL's server binaries (initdb, postgres, createdb) are neither on PATH nor in "
        "/usr/lib/postgresql/*/bin: install them (Debian: apt-get install postgresql) or put "
        "their directory on PATH"
    )


def _server_owner() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as when this process is root (it refuses root), else None.

    The ``postgres`` account where there is one (Debian's package makes it), else ``nobody``.
    """
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
    raise RuntimeError("running as root, and neither a postgres nor a nobody account exists")


@contextmanager
def running_postgres(startup_timeout: float = 60.0) -> Iterator[PostgresServer]:
    """A fresh PostgreSQL cluster on a free loopback port, with an empty database, until exit.

    ``initdb`` makes the cluster in a new temporary directory (trust authentication, no locale),
    ``postgres`` serves it on 127.0.0.1 and a Unix socket in that directory, ``createdb`` makes
    :data:`POSTGRES_DB`. At exit the server gets a fast shutdown (SIGINT; SIGKILL after 30 s)
    and the directory goes. Durability settings are PostgreSQL's defaults, as in production.
    Run as root, the server runs as the ``postgres`` (else ``nobody``) account. About 5 s.

    Raises:
        RuntimeError: If the binaries are missing (see :func:`postgres_bin`), ``initdb`` fails,
            or the server does not take a database within ``startup_timeout`` seconds.
    """
    bindir = postgres_bin()
    owner = _server_owner()
    as_owner: dict[str, Any] = (
        {"user": owner[0], "group": owner[1], "extra_groups": []} if owner else {}
    )
    # A short path: the Unix socket's must fit in 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="ls-pg-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    process: subprocess.Popen[bytes] | None = None
    try:
        if owner:
            os.chown(root, *owner)
        data, log = root / "data", root / "postgres.log"
        done = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", POSTGRES_USER, "-A", "trust"]
            + ["-E", "UTF8", "--no-locale", "--no-sync"],
            capture_output=True,
            text=True,
            env=env,
            **as_owner,
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stderr[-4000:]}")
        port = _free_port()
        cmd = [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(root)]
        cmd += ["-c", "listen_addresses=127.0.0.1"]
        with open(log, "ab") as out:
            process = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=root,
                start_new_session=True,
                **as_owner,
            )
        server = PostgresServer(
            host="127.0.0.1",
            port=port,
            name=POSTGRES_DB,
            user=POSTGRES_USER,
            root=root,
            log=log,
            process=process,
        )
        createdb = [str(bindir / "createdb"), "-h", server.host, "-p", str(port)]
        createdb += ["-U", POSTGRES_USER, POSTGRES_DB]

        def database_made() -> str | None:  # createdb fails until the server takes connections
            done = subprocess.run(createdb, capture_output=True, text=True, env=env)
            return None if done.returncode == 0 else done.stderr.strip()[-2000:]

        _await_ready("postgres", process, database_made, startup_timeout, log, server.log_tail)
        yield server
    finally:
        if process is not None:
            _stop(process, signal.SIGINT, grace=30)  # SIGINT: PostgreSQL's fast shutdown
        shutil.rmtree(root, ignore_errors=True)


# Label Studio itself


@contextmanager
def running_label_studio(
    data_dir: Path,
    exe: str | None = None,
    startup_timeout: float = 300.0,
    database: str = "sqlite",
    extra_env: dict[str, str] | None = None,
) -> Iterator[LabelStudioServer]:
    """Run ``label-studio start`` on a fresh data dir until the block ends.

    The environment makes it a quiet, offline, test-friendly server: a known admin and legacy
    token, loopback ML backends and webhooks allowed (ML_BLOCK_LOCAL_IP, SSRF_PROTECTION_ENABLED
    off), no version check, Sentry or analytics, task locks of 5 s instead of 24 h, and
    LABEL_STUDIO_HOST set to its real URL, the ``hostname`` it hands the backend in /setup.

    ``database``: ``"sqlite"`` (the default: a file in ``data_dir``, copied from a migrated
    template, ~6 s to start) or ``"postgresql"``, what production runs on: a throwaway cluster
    (:func:`running_postgres`) for this server alone, stopped and deleted after it. Its
    migrations run at every start (30-50 s on 2 cores; media files stay in ``data_dir``).
    ``extra_env``: more settings for the server, e.g. a feature flag (``fflag_...=true``).

    Raises:
        RuntimeError: If it exits or ``GET /health/`` does not answer within
            ``startup_timeout`` seconds (a first start migrates, ~70 s); with the log's tail.
        ValueError: For any other ``database``.
    """
    if database not in ("sqlite", "postgresql"):
        raise ValueError(f"database must be 'sqlite' or 'postgresql', not {database!r}")
    with ExitStack() as stack:
        exe = exe or label_studio_bin()
        data_dir.mkdir(parents=True, exist_ok=True)
        db_env = {"DJANGO_DB": "sqlite"}
        template, db, fresh = _template_db(exe), data_dir / "label_studio.sqlite3", False
        if database == "postgresql":
            db_env = stack.enter_context(running_postgres()).label_studio_env()
        else:
            fresh = not db.exists()
            if fresh and template.exists():
                shutil.copyfile(template, db)
        server = stack.enter_context(
            _label_studio_process(
                exe, data_dir, {**db_env, **(extra_env or {})}, database, startup_timeout
            )
        )
        if fresh and not template.exists():
            _save_template(db, template)
        yield server


@contextmanager
def _label_studio_process(
    exe: str, data_dir: Path, db_env: dict[str, str], database: str, startup_timeout: float
) -> Iterator[LabelStudioServer]:
    """``label-studio start`` with ``db_env`` (its database, any extra settings) set."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LABEL_STUDIO_", "HEARTEX_", "DJANGO_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(
        {
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "LABEL_STUDIO_USERNAME": LABEL_STUDIO_USERNAME,
            "LABEL_STUDIO_PASSWORD": LABEL_STUDIO_PASSWORD,
            "LABEL_STUDIO_USER_TOKEN": LABEL_STUDIO_TOKEN,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "LABEL_STUDIO_HOST": url,
            "ML_BLOCK_LOCAL_IP": "false",
            "SSRF_PROTECTION_ENABLED": "false",
            "LATEST_VERSION_CHECK": "false",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            "COLLECT_ANALYTICS": "false",
            "TASK_LOCK_TTL": "5",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    env.update(db_env)
    log = data_dir / "label_studio.log"
    cmd = [exe, "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port)]
    with open(log, "ab") as out:
        process = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=data_dir, start_new_session=True
        )
    server = LabelStudioServer(
        url=url,
        token=LABEL_STUDIO_TOKEN,
        log=log,
        data_dir=data_dir,
        username=LABEL_STUDIO_USERNAME,
        password=LABEL_STUDIO_PASSWORD,
        process=process,
        database=database,
    )
    try:

        def healthy() -> str | None:
            try:
                answer = requests.get(f"{url}/health/", timeout=2)
            except requests.RequestException as err:
                return f"{type(err).__name__}"
            return None if answer.ok else f"HTTP {answer.status_code}"

        _await_ready("label-studio", process, healthy, startup_timeout, log, server.log_tail)
        yield server
    finally:
        _stop(process)


def _stop(
    process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM, grace: float = 15
) -> None:
    """Send ``sig`` to its process group, SIGKILL after ``grace`` seconds."""
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
