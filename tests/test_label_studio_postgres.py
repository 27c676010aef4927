"""Label Studio on a throwaway PostgreSQL, the database production runs on.

The push benchmark measures 20,000 tasks on it (Label Studio on SQLite answers 500 there). It
needs PostgreSQL's server binaries (initdb, postgres, createdb, e.g. Debian's ``postgresql``
package): locally the test skips without them, under CI=true it fails, as the Label Studio
fixture never skips there.
"""

from __future__ import annotations

import os

import pytest
from test_label_studio import CONFIG

from activestream.benchmarks.label_studio_client import (
    postgres_bin,
    running_label_studio,
    running_postgres,
)

pytestmark = pytest.mark.slow


@pytest.fixture()
def have_postgres() -> None:
    if os.environ.get("CI") != "true" and os.environ.get("ACTIVESTREAM_SKIP_LABEL_STUDIO") == "1":
        pytest.skip("ACTIVESTREAM_SKIP_LABEL_STUDIO=1")
    try:
        postgres_bin()
    except RuntimeError as err:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(str(err))


def test_label_studio_on_a_throwaway_postgresql_starts_answers_and_leaves_nothing(
    have_postgres, tmp_path
):
    with running_postgres() as pg:
        root = pg.root
        assert pg.process.poll() is None and (root / "data" / "PG_VERSION").exists()
    assert pg.process.poll() is not None and not root.exists()

    with running_label_studio(tmp_path / "ls", database="postgresql") as server:
        assert server.database == "postgresql"
        ls = server.client()
        project = ls.create_project("on postgres", CONFIG)["id"]
        assert ls.import_tasks(project, [{"image": f"/x/{i}.png"} for i in range(3)]) == 3
        assert [t["data"]["image"] for t in ls.tasks(project)] == [f"/x/{i}.png" for i in range(3)]
    assert server.process.poll() is not None
    assert not (tmp_path / "ls" / "label_studio.sqlite3").exists()  # nothing went to SQLite
