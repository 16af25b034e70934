"""A SQL session on a DuckDB file a run loaded, with its tables on the search path.

    .venv/bin/python -m klaviyo_source.sql                          # klaviyo_data.duckdb, schema klaviyo
    .venv/bin/python -m klaviyo_source.sql klaviyo_demo.duckdb      # the demo's file
    .venv/bin/python -m klaviyo_source.sql -c "select count(*) from events"
    .venv/bin/python -m klaviyo_source.sql < queries.sql

Type or paste statements ending with `;`; Ctrl-D ends the session. The file is opened read-only, and only
while a statement runs: DuckDB lets no other process open a file while one writes to it, nor write while
another holds it open, so a session that kept the file open would make the next scheduled run fail.
It needs only the duckdb package the project installs: the `duckdb` command-line program is installed by
nothing here, and the duckdb-cli package on PyPI cannot read files of the DuckDB version dlt writes with.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterable, Iterator

import duckdb

from klaviyo_source import DATASET, DUCKDB_FILE


@contextlib.contextmanager
def opened(database: str, dataset: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """The file, read-only, with `dataset` as the default schema (tables need no qualification)."""
    with duckdb.connect(database, read_only=True) as connection:
        catalog = connection.execute("select current_database()").fetchone()[0]  # type: ignore[index]
        schemas = [r[0] for r in connection.execute(
            "select schema_name from information_schema.schemata where catalog_name = ?", [catalog]).fetchall()]
        if dataset not in schemas:
            found = ", ".join(s for s in schemas if s not in ("main", "information_schema", "pg_catalog")) or "none"
            raise SystemExit(f"error: {database} has no schema {dataset!r} (schemas there: {found}); pass --dataset.")
        # Qualified with the catalog: a file named like its dataset (klaviyo.duckdb, schema klaviyo) stays usable.
        connection.execute(f'use "{catalog}"."{dataset}"')
        yield connection


def run(database: str, dataset: str, text: str) -> bool:
    """Runs every statement of `text`, printing each result; False if one failed (the others still run)."""
    ok = True
    try:
        parsed = duckdb.extract_statements(text)
        with opened(database, dataset) as connection:
            for statement in parsed:
                try:
                    result = connection.sql(statement.query)
                    if result is not None:
                        result.show(max_rows=50)
                except duckdb.Error as exc:
                    print(f"Error: {exc}", file=sys.stderr)
                    ok = False
    except duckdb.Error as exc:  # a statement that does not parse, or the file in use by a run
        print(f"Error: {exc}", file=sys.stderr)
        return False
    return ok


def statements(lines: Iterable[str]) -> Iterable[str]:
    """Groups typed lines into complete statements (the text up to a line ending with `;`)."""
    pending: list[str] = []
    for line in lines:
        pending.append(line)
        if line.rstrip().endswith(";"):
            yield "\n".join(pending)
            pending = []
    if any(p.strip() for p in pending):
        yield "\n".join(pending)


def _typed_lines() -> Iterable[str]:
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history where available)
    prompt = "klaviyo> "
    while True:
        try:
            line = input(prompt)
        except EOFError:
            print()
            return
        prompt = "klaviyo> " if line.rstrip().endswith(";") else "    ...> "
        yield line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m klaviyo_source.sql", description=__doc__.split("\n")[0])
    parser.add_argument("database", nargs="?", default=DUCKDB_FILE, help=f"DuckDB file (default {DUCKDB_FILE})")
    parser.add_argument("--dataset", default=DATASET, help=f"schema holding the tables (default {DATASET})")
    parser.add_argument("-c", "--command", help="run these statements and exit")
    args = parser.parse_args(argv)
    if not os.path.exists(args.database):
        print(f"error: {args.database} does not exist: load it first (pipelines/klaviyo_pipeline.py) or name "
              "the file to open.", file=sys.stderr)
        return 2
    try:
        with opened(args.database, args.dataset) as connection:
            tables = [r[0] for r in connection.execute(
                "select table_name from information_schema.tables where table_schema = ? and table_name not like "
                "'\\_dlt%' escape '\\' order by 1", [args.dataset]).fetchall()]
    except duckdb.Error as exc:
        print(f"error: cannot open {args.database}: {exc}", file=sys.stderr)
        return 1
    if args.command is not None:
        return 0 if run(args.database, args.dataset, args.command) else 1
    if not sys.stdin.isatty():  # piped: read as if typed, statement by statement
        lines = (line.rstrip("\n") for line in sys.stdin)
        results = [run(args.database, args.dataset, text) for text in statements(lines)]
        return 0 if all(results) else 1
    print(f"{args.database}, schema {args.dataset}: {', '.join(tables)}")
    print("End statements with ; - Ctrl-D quits.")
    for text in statements(_typed_lines()):
        run(args.database, args.dataset, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
