"""`egresslens sql` reads the store and nothing else: it cannot write (to the store or any other
database or file), read other files, reach the network or load extensions, and runs one statement."""

from __future__ import annotations

import json

import duckdb
import pytest
from typer.testing import CliRunner

from egresslens import exitcodes, store
from egresslens.cli import app

runner = CliRunner()


@pytest.fixture
def stores(tmp_path):
    """(the store, another DuckDB database beside it with one row in `flows`)."""
    db = tmp_path / "s.duckdb"
    store.connect(db).close()
    other = tmp_path / "other.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE flows AS SELECT 1 AS a")
    con.close()
    return db, other


def sql(db, query: str, *extra: str):
    return runner.invoke(app, ["sql", query, "--db", str(db), *extra])


def assert_refused(result, *words: str) -> None:
    assert result.exit_code == exitcodes.USAGE, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]


def test_a_query_still_works(stores):
    db, _ = stores
    result = sql(db, "SELECT count(*) AS n FROM flows", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"n": 0}


@pytest.mark.parametrize("query", ["DESCRIBE flows", "SHOW TABLES", "SUMMARIZE flows", "FROM flows",
                                   "WITH x AS (SELECT 1 AS a) SELECT * FROM x", "EXPLAIN SELECT 1",
                                   "PRAGMA table_info('flows')", "SELECT 1;"])
def test_every_kind_of_read_only_query_is_allowed(stores, query):
    assert sql(stores[0], query).exit_code == 0


def test_attach_read_write_then_delete_cannot_touch_another_store(stores):
    db, other = stores
    assert_refused(sql(db, f"ATTACH '{other}' AS o (READ_WRITE); DELETE FROM o.flows"), "one statement")
    assert_refused(sql(db, f"ATTACH '{other}' AS o (READ_WRITE)"), "ATTACH")
    assert_refused(sql(db, "DELETE FROM o.flows"), "DELETE")
    con = duckdb.connect(str(other), read_only=True)
    assert con.execute("SELECT count(*) FROM flows").fetchall() == [(1,)]
    con.close()


def test_delete_from_the_store_is_refused(stores):
    assert_refused(sql(stores[0], "DELETE FROM flows"), "DELETE", "read-only")


def test_copy_to_a_file_is_refused_and_writes_nothing(stores, tmp_path):
    target = tmp_path / "out.csv"
    assert_refused(sql(stores[0], f"COPY flows TO '{target}'"), "COPY")
    assert not target.exists()


def test_export_database_is_refused_and_writes_nothing(stores, tmp_path):
    target = tmp_path / "export"
    assert_refused(sql(stores[0], f"EXPORT DATABASE '{target}'"), "EXPORT")
    assert not target.exists()


@pytest.mark.parametrize("query", ["INSTALL httpfs", "LOAD httpfs", "FORCE INSTALL httpfs FROM core"])
def test_installing_or_loading_an_extension_is_refused(stores, query):
    assert_refused(sql(stores[0], query), "refused")


@pytest.mark.parametrize("query", ["SELECT * FROM read_text('/etc/passwd')", "SELECT * FROM read_csv('/etc/passwd')",
                                   "SELECT * FROM glob('/etc/*')", "SELECT * FROM 'https://example.com/x.csv'"])
def test_reading_any_other_file_or_url_is_refused(stores, query):
    result = sql(stores[0], query)
    assert_refused(result, "reads only the store")
    assert "root:" not in result.output


@pytest.mark.parametrize("query", ["SET enable_external_access = true", "RESET enable_external_access",
                                   "SET lock_configuration = false", "SET autoinstall_known_extensions = true"])
def test_set_cannot_re_enable_anything(stores, query):
    assert_refused(sql(stores[0], query), "SET")


def test_the_sandbox_holds_even_for_statements_run_directly_on_its_connection(stores):
    """Defence in depth: the statement check is not the only guard; the connection itself refuses."""
    con = store.connect_query(stores[0])
    try:
        for statement in ("SET enable_external_access = true", "SET lock_configuration = false"):
            with pytest.raises(duckdb.Error, match="locked"):
                con.execute(statement)
        with pytest.raises(duckdb.PermissionException):
            con.execute("SELECT * FROM read_text('/etc/passwd')")
        with pytest.raises(duckdb.Error):
            con.execute("CREATE TABLE t AS SELECT 1")
    finally:
        con.close()


@pytest.mark.parametrize("query", ["SELECT 1; SELECT 2", "SELECT 1; DROP TABLE flows", ";;SELECT 1;SELECT 2;"])
def test_more_than_one_statement_is_refused(stores, query):
    assert_refused(sql(stores[0], query), "exactly one statement")


def test_a_syntax_error_is_one_line(stores):
    assert_refused(sql(stores[0], "SELEC 1"), "syntax")
