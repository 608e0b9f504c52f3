"""Act as a budgeting app that pulls from a SimpleFIN server, with
simplefin4py (PyPI), an independent SimpleFIN client.

Usage:
  simplefin_client.py claim SETUP_TOKEN     prints the Access URL
  simplefin_client.py accounts ACCESS_URL   prints what the client parsed, as JSON
Exit code 3: the server refused the claim (403); 4: it refused the access (403).
"""
import asyncio
import json
import sys
from decimal import Decimal

from simplefin4py import SimpleFin
from simplefin4py.exceptions import SimpleFinAuthError, SimpleFinClaimError


async def main():
    kind, arg = sys.argv[1], sys.argv[2]
    if kind == "claim":
        try:
            print(await SimpleFin.claim_setup_token(arg, verify_ssl=False))
        except SimpleFinClaimError:
            sys.exit(3)
        return
    client = SimpleFin(arg, verify_ssl=False)
    try:
        data = await client.fetch_data()
    except SimpleFinAuthError:
        sys.exit(4)
    out = {"errors": data.errors, "accounts": {}}
    for account in data.accounts:
        rows = account.transactions
        out["accounts"][account.id] = {
            "org": account.org.name,
            "domain": account.org.domain,
            "name": account.name,
            "currency": account.currency,
            "balance": account.balance,
            "available": account.available_balance,
            "balance_date": account.balance_date.isoformat(),
            "count": len(rows),
            "sum": str(sum((Decimal(t.amount) for t in rows), Decimal(0))),
            "unique_ids": len({t.id for t in rows}),
            "non_ascii": sum(1 for t in rows if not t.description.isascii()),
            "posted_sorted": all(
                a.posted <= b.posted for a, b in zip(rows, rows[1:])
            ),
        }
    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    asyncio.run(main())
