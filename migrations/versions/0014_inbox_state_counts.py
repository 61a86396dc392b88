"""inbox events by state, counted by the database as they change

Revision ID: 0014_inbox_state_counts
Revises: 0013_inbox_scale_indexes
Create Date: 2026-12-10 09:00:00

Measured with `python -m bench --only scale` (docs/PERFORMANCE.md, "Scale"): with 1 million
inbox rows the count of events by state (the dashboard, GET /ops/status, /metrics) took 64 ms,
an index-only scan of the whole state index, over the 50 ms target. Now the database keeps the
counts itself: triggers on inbox_events add a row of changes to inbox_state_counts for every
statement that inserts, moves or deletes events (whatever code sends it: the ORM, the
repository's UPDATEs, the webhooks' multi-row INSERT), and a state's count is the sum of its
rows. Rows are only added, so writers never queue on a shared counter row; the sweeper folds
them into one row per state.

PostgreSQL: one trigger per statement, reading its transition tables (they allow no column
list, so every UPDATE runs it; one that leaves the states as they were writes nothing).
SQLite: one trigger per row. A later batch migration of inbox_events on SQLite rebuilds the
table without its triggers: it must create them again.

The table starts from the counts as they are, with inbox_events locked against writes on
PostgreSQL until the triggers exist (no change is missed or counted twice). On SQLite the
seed's INSERT opens the write transaction the triggers are created in.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_inbox_state_counts"
down_revision: str | None = "0013_inbox_scale_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
ADD = "INSERT INTO inbox_state_counts (state, n)"

# Trigger name → (when, transition table, the changes it adds). CREATE OR REPLACE: `sagebridge
# reset` drops the tables (and their triggers) but not the functions.
POSTGRESQL = {
    "inbox_state_counts_insert": (
        "AFTER INSERT",
        "REFERENCING NEW TABLE AS new_rows",
        f"{ADD} SELECT state, count(*) FROM new_rows GROUP BY state",
    ),
    "inbox_state_counts_update": (
        "AFTER UPDATE",
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
        f"""{ADD} SELECT state, sum(n) FROM (
                SELECT state, 1 AS n FROM new_rows
                UNION ALL
                SELECT state, -1 FROM old_rows
            ) AS moves
            GROUP BY state HAVING sum(n) <> 0""",
    ),
    "inbox_state_counts_delete": (
        "AFTER DELETE",
        "REFERENCING OLD TABLE AS old_rows",
        f"{ADD} SELECT state, -count(*) FROM old_rows GROUP BY state",
    ),
    "inbox_state_counts_truncate": ("AFTER TRUNCATE", "", "DELETE FROM inbox_state_counts"),
}
SQLITE = {
    "inbox_state_counts_insert": ("AFTER INSERT", f"{ADD} VALUES (NEW.state, 1)"),
    "inbox_state_counts_update": (
        "AFTER UPDATE OF state",
        f"{ADD} VALUES (OLD.state, -1), (NEW.state, 1)",
    ),
    "inbox_state_counts_delete": ("AFTER DELETE", f"{ADD} VALUES (OLD.state, -1)"),
}
SQLITE_WHEN = {"inbox_state_counts_update": "WHEN OLD.state IS NOT NEW.state"}


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute("LOCK TABLE inbox_events IN SHARE ROW EXCLUSIVE MODE")
    op.create_table(
        "inbox_state_counts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    op.execute(f"{ADD} SELECT state, count(*) FROM inbox_events GROUP BY state")
    if postgresql:
        _create_postgresql_triggers()
    else:
        _create_sqlite_triggers()


def _create_postgresql_triggers() -> None:
    for name, (when, transition, changes) in POSTGRESQL.items():
        op.execute(
            f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$"
            f" BEGIN {changes}; RETURN NULL; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {name} {when} ON inbox_events {transition}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
        )


def _create_sqlite_triggers() -> None:
    for name, (when, changes) in SQLITE.items():
        op.execute(
            f"CREATE TRIGGER {name} {when} ON inbox_events FOR EACH ROW"
            f" {SQLITE_WHEN.get(name, '')} BEGIN {changes}; END"
        )


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name in POSTGRESQL if postgresql else SQLITE:
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (" ON inbox_events" if postgresql else ""))
        if postgresql:
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    op.drop_table("inbox_state_counts")
