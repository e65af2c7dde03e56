"""The server's SQLite database: schemas, logical digest, 7.1 rebuild, migrations and imports.

Pure synchronous functions on database paths (no asyncio). Invariants:

- the schema number lives in ``meta('schema')`` and ``PRAGMA user_version``, always equal;
- schemas below 20 are the pre-7.1 data model, 20 and above the 7.1 model; only
  :func:`rebuild` crosses between them (rule DB-1), :func:`migrate_copy` steps within the new
  model (rule DB-2), and nothing leads back;
- a source database is only ever opened read-only; a new database appears at its final path only
  after its :func:`digest` (counts and checksums of every logical record) equals the source's;
- :func:`import_records` applies the vendor's import rules (docs/rules.md, MIG-1) inside one transaction.
"""

from agent.database.digest import ENTITIES, RecordDigest, digest
from agent.database.engine import (
    RECOMPUTE,
    DatabaseVerifier,
    DbReport,
    Recompute,
    check_opens,
    migrate_copy,
    rebuild,
    tmp_path,
)
from agent.database.importer import ImportReport, import_records, user_count
from agent.database.schema import KNOWN_SCHEMAS, NEW_MODEL, create_empty, schema_of

__all__ = [
    "ENTITIES",
    "KNOWN_SCHEMAS",
    "NEW_MODEL",
    "RECOMPUTE",
    "DatabaseVerifier",
    "DbReport",
    "ImportReport",
    "Recompute",
    "RecordDigest",
    "check_opens",
    "create_empty",
    "digest",
    "import_records",
    "migrate_copy",
    "rebuild",
    "schema_of",
    "tmp_path",
    "user_count",
]
