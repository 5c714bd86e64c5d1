"""`comfy-router keys add|list|revoke`: API keys in the `api_keys` table (DATABASE_URL).

`add` prints the new key once, on stdout; only its SHA-256 digest is stored. `list` never shows keys.
"""

from __future__ import annotations

import argparse
import sys

from router.clock import SystemClock
from router.db.database import Database
from router.limits.api_keys import SCOPES, add_key, list_keys, revoke_key
from router.settings import Settings


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="comfy-router keys", description="Manage API keys (api_keys table).")
    sub = p.add_subparsers(dest="cmd", required=True)
    add = sub.add_parser("add", help="create a key for a client and print it once")
    add.add_argument("--client", required=True, help="the client the key acts as (1-128 characters)")
    add.add_argument(
        "--scope", action="append", choices=sorted(SCOPES), help="client (default) or admin; repeatable"
    )
    add.add_argument("--label", default=None, help="a note for `keys list` (who holds the key)")
    sub.add_parser("list", help="list keys (id, client, scopes, label, created, revoked); never the keys")
    revoke = sub.add_parser("revoke", help="revoke a key by its id (takes effect within 5 s)")
    revoke.add_argument("id", type=int)
    args = p.parse_args(argv)
    settings = Settings()
    db = Database(settings.database_url)
    try:
        if settings.migrate_on_start:
            db.migrate()
        return _run(args, db)
    finally:
        db.dispose()


def _run(args: argparse.Namespace, db: Database) -> int:
    now = SystemClock().now()
    if args.cmd == "add":
        if not 1 <= len(args.client) <= 128:
            print("--client must be 1 to 128 characters", file=sys.stderr)
            return 2
        row, key = add_key(db, args.client, frozenset(args.scope or ["client"]), now, args.label)
        print(key)
        print(
            f"key {row.id} for client {row.client_id} ({' '.join(sorted(row.scopes))}): shown once, "
            "store it now; only its SHA-256 digest is kept",
            file=sys.stderr,
        )
        return 0
    if args.cmd == "list":
        print(f"{'id':>4}  {'client':<24} {'scopes':<14} {'created (UTC)':<20} {'revoked':<20} label")
        for r in list_keys(db):
            revoked = r.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if r.revoked_at else "-"
            print(
                f"{r.id:>4}  {r.client_id:<24} {' '.join(sorted(r.scopes)):<14} "
                f"{r.created_at.strftime('%Y-%m-%d %H:%M:%S'):<20} {revoked:<20} {r.label or ''}"
            )
        return 0
    found = revoke_key(db, args.id, now)
    if found is None:
        print(f"no key {args.id}", file=sys.stderr)
        return 1
    print(f"key {found.id} of client {found.client_id} revoked")
    return 0
