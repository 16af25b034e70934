"""Housekeeping: leftovers of dead runs go, committed packages stay, old packages are pruned, doubles repaired."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import dlt
import pytest

from klaviyo_source.housekeeping import folder_size, prune_loaded, remove_orphans, repair_doubles


def put(path: Path, size: int = 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_orphans_are_removed_and_committed_packages_kept(tmp_path: Path) -> None:
    root = tmp_path / "pipelines" / "p"
    half_extract = put(root / "normalize" / "a4a080f4ef611873" / "new" / "1.2" / "new_jobs" / "events.parquet", 1000)
    extracted = put(root / "normalize" / "extracted" / "1.3" / "new_jobs" / "events.parquet")
    renormalized = put(root / "load" / "new" / "1.3" / "new_jobs" / "events.parquet")  # its source is still there
    half_normalized = put(root / "load" / "new" / "1.1" / "new_jobs" / "events.parquet", 500)
    normalized = put(root / "load" / "normalized" / "1.0" / "new_jobs" / "events.parquet")
    temp_file = put(root / "3f9c0a1b", 7)
    state = put(root / "state.json")
    database = tmp_path / "k.duckdb"
    dead_spill = put(Path(f"{database}.tmp") / f"duckdb_temp_{dead_pid()}_0_storage_DEFAULT-0.tmp", 300)
    live_spill = put(Path(f"{database}.tmp") / f"duckdb_temp_{os.getpid()}_0_storage_DEFAULT-0.tmp")

    removed = remove_orphans(root, database)

    assert set(removed.paths) == {half_extract.parents[3], half_normalized.parents[1], temp_file, dead_spill}
    assert removed.size == 1000 + 500 + 7 + 300
    for kept in (extracted, renormalized, normalized, state, live_spill):
        assert kept.exists(), kept
    assert not remove_orphans(root, database), "nothing left to remove"


def test_prune_keeps_the_newest_packages(tmp_path: Path) -> None:
    loaded = tmp_path / "load" / "loaded"
    for load_id in ("1795794028.858707", "1795794100.1", "1795795000.25", "999999999.5"):
        put(loaded / load_id / "completed_jobs" / "events.parquet", 100)
    removed = prune_loaded(tmp_path, keep=2)
    assert sorted(p.name for p in loaded.iterdir()) == ["1795794100.1", "1795795000.25"]
    assert removed.size == 200 and len(removed.paths) == 2
    assert not prune_loaded(tmp_path, keep=2)
    prune_loaded(tmp_path, keep=0)
    assert folder_size(loaded) == 0 and not list(loaded.iterdir())


def doubled_pipeline(destination: Any, workdir: Path) -> dlt.Pipeline:
    """A merge table and a composite-key merge table, then rows doubled as an unlocked overlap doubles them."""
    pipeline = dlt.pipeline(f"hk_{uuid.uuid4().hex[:6]}", destination=destination,
                            dataset_name=f"hk_{uuid.uuid4().hex[:8]}", pipelines_dir=str(workdir))

    @dlt.resource(primary_key="id", write_disposition="merge")
    def items() -> Any:
        yield [{"id": i, "v": f"old{i}"} for i in range(5)]

    @dlt.resource(primary_key=("list_id", "profile_id"), write_disposition="merge")
    def members() -> Any:
        yield [{"list_id": "L", "profile_id": p} for p in range(4)]

    pipeline.run([items(), members()])
    with pipeline.sql_client() as client:
        newer = "9999999999.9"
        client.execute_sql(f"insert into {client.make_qualified_table_name('items')} (id, v, _dlt_load_id, _dlt_id) "
                           f"select id, 'new' || id, '{newer}', _dlt_id || 'x' from "
                           f"{client.make_qualified_table_name('items')} where id < 3")
        members_table = client.make_qualified_table_name("members")
        client.execute_sql(f"insert into {members_table} (list_id, profile_id, _dlt_load_id, _dlt_id) "
                           f"select list_id, profile_id, _dlt_load_id, _dlt_id || 'x' from {members_table}")
    return pipeline


def check_repaired(pipeline: dlt.Pipeline) -> None:
    assert repair_doubles(pipeline) == {"items": 3, "members": 4}
    with pipeline.sql_client() as client:
        rows = sorted(tuple(r) for r in client.execute_sql("select id, v from items"))
        members = client.execute_sql("select count(*), count(distinct profile_id) from members")[0]
    assert rows == [(0, "new0"), (1, "new1"), (2, "new2"), (3, "old3"), (4, "old4")], "the newest load's row stays"
    assert tuple(members) == (4, 4)
    assert repair_doubles(pipeline) == {}


def test_repair_doubles_on_duckdb(tmp_path: Path) -> None:
    check_repaired(doubled_pipeline(dlt.destinations.duckdb(str(tmp_path / "hk.duckdb")), tmp_path))


@pytest.mark.postgres
def test_repair_doubles_on_postgres(tmp_path: Path) -> None:
    dsn = os.environ.get("KLAVIYO_TEST_POSTGRES_DSN")
    if not dsn:
        pytest.skip("KLAVIYO_TEST_POSTGRES_DSN is not set")
    pipeline = doubled_pipeline(dlt.destinations.postgres(dsn), tmp_path)
    try:
        check_repaired(pipeline)
    finally:
        with pipeline.sql_client() as client:
            client.drop_dataset()
