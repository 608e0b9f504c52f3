#!/usr/bin/env python3
"""An independent Fibank client in the manner of the user story's Python
connector, used to check that the simulated Fibank is faithful to it.

It uses a requests.Session that follows redirects, reads the access token from
the Location of the second redirect (response.history[1]), scrapes <meta> tags
line by line, asks GetCustBal for everything from a fixed "genesis" date with a
literal %2B0200 in FromDate (which requests encodes once more), skips the
OP/CL/DT/CT summary lines, and keys rows on acEntrySrNo.

Every other statement line is parsed strictly, the way a model with one typed
column per field stores it: each field the reference lists must be present
with its type (acEntrySrNo an integer; acBal and amount numbers that fit a
DECIMAL(11,2); dateTime and valueDt in %Y-%m-%dT%H:%M:%S%z; the texts strings,
never null). A line that breaks this stops the client with the reason, as it
would crash the story's connector.

Card holds not booked yet come from getBlockedAmounts (the sandbox's modelled
view of the site's blocked amounts), read separately.

Usage: python_client.py BASE_URL USERNAME PASSWORD
Prints {"<iban>": {"count": N, "sum": "...", "pending_count": P, "pending_sum": "..."}}
where count/sum cover booked statement rows and pending_* the blocked amounts.
"""
import datetime
import json
import sys
import uuid
from decimal import Decimal
from urllib.parse import parse_qs, urlparse

import requests

SUMMARY_TYPES = {"OP", "CL", "DT", "CT"}
STAMP = "%Y-%m-%dT%H:%M:%S%z"
TEXT_FIELDS = (
    "reference", "dtkt", "contragent", "benOrderParty", "trname", "trnAccount",
    "trnType", "trnCode", "isEbankOper", "isPayment", "loadAsNew", "remI", "remIi", "remIii",
)


def decimal_11_2(line, field):
    value = line[field]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("%s is %r, not a number (entry %r)" % (field, value, line.get("acEntrySrNo")))
    d = Decimal(str(value))
    if d != d.quantize(Decimal("0.01")) or abs(d) >= Decimal(10) ** 9:
        raise ValueError("%s %s does not fit DECIMAL(11,2)" % (field, d))
    return d


def strict_row(line):
    """The row a typed model stores for one statement line, or an exception."""
    key = line["acEntrySrNo"]
    if isinstance(key, bool) or not isinstance(key, int):
        raise TypeError("acEntrySrNo is %r, not an integer" % (key,))
    row = {"acEntrySrNo": key}
    for field in TEXT_FIELDS:
        if not isinstance(line[field], str):
            raise TypeError("%s is %r, not a string (entry %d)" % (field, line[field], key))
        row[field] = line[field]
    if row["dtkt"] not in ("D", "K"):
        raise ValueError("dtkt %r is neither D nor K (entry %d)" % (row["dtkt"], key))
    row["acBal"] = decimal_11_2(line, "acBal")
    row["amount"] = decimal_11_2(line, "amount")
    row["dateTime"] = datetime.datetime.strptime(line["dateTime"], STAMP)
    row["valueDt"] = datetime.datetime.strptime(line["valueDt"], STAMP)
    return row
GENESIS = "1993-02-27T00:00:00%2B0200"


def meta_value(html, name):
    marker = '"%s"' % name
    for line in html.splitlines():
        if marker in line:
            return line.strip().replace('<meta name="%s" content="' % name, "").replace('" />', "")
    raise RuntimeError("no %s meta tag" % name)


def login(base, username, password):
    s = requests.Session()
    s.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) fidelity-check"
    r = s.get(base + "/oauth2-server/login", params={"client_id": "E_BANK"})
    r.raise_for_status()
    state = str(uuid.uuid1())
    r = s.get(
        base + "/oauth2-server/oauth/authorize",
        params={
            "response_type": "token",
            "client_id": "E_BANK",
            "redirect_uri": "/EBank/",
            "scope": "E_BANK",
            "state": state,
        },
    )
    r.raise_for_status()
    csrf = meta_value(r.text, "_csrf")
    r = s.get(
        base + "/oauth2-server/api/v1/sywscertificate/fnGetCertsForLogin",
        params={"client_id": "E_BANK", "userName": username},
    )
    r.raise_for_status()
    now = datetime.datetime.now().strftime("%Y-%m-%dT%H:%M:%S") + "+0200"
    r = s.post(
        base + "/oauth2-server/login",
        data={
            "username": username,
            "password": password,
            "system": "",
            "client_id": "E_BANK",
            "lang": "bg",
            "time": now,
            "_csrf": csrf,
            "sig": "",
        },
    )
    r.raise_for_status()
    if len(r.history) < 2:
        raise RuntimeError("login failed: %d redirects" % len(r.history))
    fragment = urlparse(r.history[1].headers["Location"]).fragment
    token = parse_qs(fragment)["access_token"][0]
    public_token = meta_value(r.text, "EBank_publicToken")
    assert public_token
    return s, token


def main():
    base, username, password = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
    s, token = login(base, username, password)
    api = base + "/EBank/api/v1/"
    headers = {
        "Authorization": "Bearer " + token,
        "EBank-Client-Time": datetime.datetime.now().isoformat(),
        "EBank-Device-Id": "AABBCCDDEE",
        "EBank-App-Version": "1.0",
        "Accept-Language": "bg",
        "Referer": base + "/EBank/",
    }
    r = s.get(api + "sywsquery/sywsquery/getCustQuery", headers=headers)
    r.raise_for_status()
    headers["EBank-Cust-Id"] = str(r.json()["customer"][0]["ibCustomerId"])
    r = s.get(api + "sywspicklist/sywspicklist/getFilteredAccounts", headers=headers)
    r.raise_for_status()
    accounts = [(a["ibanAcNo"], a["ccy"]) for a in r.json()]

    rows = {}
    for iban, _ccy in accounts:
        to_date = datetime.datetime.now(datetime.timezone.utc).astimezone().strftime("%Y-%m-%dT%H:%M:%S%z")
        r = s.get(
            api + "sywsquery/sywsquery/GetCustBal",
            headers=headers,
            params={
                "FromDate": GENESIS,
                "ToDate": to_date,
                "Iban": iban,
                "StmtType": "T",
                "isAccountFromPSD2": "false",
            },
        )
        balance = {} if r.status_code == 500 else r.json()
        acc = balance.get("acc", [])
        assert len(acc) == 1, "expected one account, got %d" % len(acc)
        for line in acc[0]["stmt"]:
            if line["trnType"] in SUMMARY_TYPES:
                continue
            row = strict_row(line)
            key = row["acEntrySrNo"]
            # The story keys rows on acEntrySrNo across the whole table.
            if key in rows:
                raise ValueError("acEntrySrNo %d appears twice" % key)
            amount = -row["amount"] if row["dtkt"] == "D" else row["amount"]
            rows[key] = (iban, amount, False)

        r = s.get(
            api + "sywsquery/sywsquery/getBlockedAmounts", headers=headers, params={"Iban": iban}
        )
        r.raise_for_status()
        for hold in r.json()["blockedAmounts"]:
            amount = Decimal(str(hold["amount"]))
            if hold["dtkt"] == "D":
                amount = -amount
            rows[("block", hold["blockId"])] = (iban, amount, True)

    out = {iban: {"count": 0, "sum": Decimal(0), "pending_count": 0, "pending_sum": Decimal(0)} for iban, _ in accounts}
    for iban, amount, pending in rows.values():
        prefix = "pending_" if pending else ""
        out[iban][prefix + "count"] += 1
        out[iban][prefix + "sum"] += amount
    cents = Decimal("0.01")
    for v in out.values():
        v["sum"] = str(v["sum"].quantize(cents))
        v["pending_sum"] = str(v["pending_sum"].quantize(cents))
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
