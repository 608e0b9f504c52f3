"""The official GoCardless Bank Account Data client (`nordigen` from PyPI)
against bankbridge's simulator: its documented quick-start, step by step,
with only the base URL changed and the bank visit done through the
simulator's control route. Prints one JSON line: what the client saw.

Usage: python gocardless_quickstart.py ROOT_URL SECRET_ID SECRET_KEY
"""
import json
import sys
import uuid

import requests
from nordigen import NordigenClient

root, secret_id, secret_key = sys.argv[1:4]

client = NordigenClient(secret_id=secret_id, secret_key=secret_key)
client.base_url = root + "/gocardless/api/v2"

# Tokens: a pair, then a fresh access token from the refresh token.
pair = client.generate_token()
client.exchange_token(pair["refresh"])

# Institutions by country, and one picked by name.
banks = client.institution.get_institutions("LV")
revolut = client.institution.get_institution_id_by_name(country="LV", institution="Revolut")
sandbox = "SANDBOXFINANCE_SFIN0000"

# Agreement and requisition in one step, as the quick-start does.
session = client.initialize_session(
    institution_id=sandbox,
    redirect_uri="http://127.0.0.1:9/back",
    reference_id=str(uuid.uuid4()),
    max_historical_days=730,
)

# The user's visit to the bank (a browser in real life).
back = requests.post(
    f"{root}/_sandbox/gocardless/requisitions/{session.requisition_id}/link",
    json={"approve": True},
    timeout=10,
).json()["redirect"]

requisition = client.requisition.get_requisition_by_id(requisition_id=session.requisition_id)
seen = []
for account_id in requisition["accounts"]:
    account = client.account_api(id=account_id)
    meta = account.get_metadata()
    details = account.get_details()
    balances = account.get_balances()
    everything = account.get_transactions()
    # The newest booking day again, with dates as the quick-start passes them.
    newest = everything["transactions"]["booked"][0]["bookingDate"]
    recent = account.get_transactions(date_from=newest, date_to=newest)
    seen.append({
        "iban": meta["iban"],
        "details_iban": details["account"]["iban"],
        "balances": len(balances["balances"]),
        "booked": len(everything["transactions"]["booked"]),
        "booked_sum": str(sum(
            round(float(t["transactionAmount"]["amount"]) * 100)
            for t in everything["transactions"]["booked"]
        )),
        "pending": len(everything["transactions"]["pending"]),
        "newest_day": len(recent["transactions"]["booked"]),
        "status": meta["status"],
    })

print(json.dumps({
    "banks": [b["id"] for b in banks],
    "revolut": revolut,
    "link": session.link,
    "back": back,
    "status": requisition["status"],
    "accounts": seen,
}))
