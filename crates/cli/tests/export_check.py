"""Read an export with an independent reader and print what it found, per
account, as JSON. The Rust tests compare it with the sandbox bank's truth.

Usage:
  export_check.py qif FILE [us|eu|iso]   quiffen (PyPI) parses the file
  export_check.py camt FILE              camt.053 .02 or .08: checked against
      the ISO 20022 schema's bindings (pyiso20022, generated from the XSDs:
      element names, order, required elements, lengths, patterns, amounts),
      then read by pycamt (PyPI) for balances and entries (entries by the
      bindings too, and by them alone past PYCAMT_MAX_ENTRIES)
  export_check.py ofx FILE               ofxtools (PyPI) parses and converts
      the file (it checks the OFX specification's elements and lengths)

Amounts are summed as Decimal and printed as strings.
"""
import dataclasses
import decimal
import functools
import json
import re
import sys
from decimal import Decimal


def qif(path, dates="us"):
    from quiffen import Qif

    parsed = Qif.parse(path, day_first=(dates == "eu"))
    out = {}
    for name, account in parsed.accounts.items():
        rows = [t for t in account.transactions.get("Bank", [])]
        out[name] = {
            "count": len(rows),
            "sum": str(sum((Decimal(str(t.amount)) for t in rows), Decimal(0))),
            "cleared": sum(1 for t in rows if t.cleared),
            "ids": len({t.check_number for t in rows if t.check_number is not None}),
            "first_date": min((t.date for t in rows)).date().isoformat() if rows else None,
            "payees": [t.payee for t in rows[:2000] if t.payee],
        }
    return out


# ---------------------------------------------------------------- camt.053

def schema_check(path):
    """Parse with the schema's generated bindings, failing on anything the
    schema does not know, then walk the tree against the bindings' facets
    and element order. Returns the message version."""
    from lxml import etree
    from xsdata.formats.dataclass.parsers import XmlParser
    from xsdata.formats.dataclass.parsers.config import ParserConfig

    root = etree.parse(path).getroot()
    ns = etree.QName(root).namespace
    m = re.fullmatch(r"urn:iso:std:iso:20022:tech:xsd:camt\.053\.001\.(\d\d)", ns or "")
    if not m:
        raise SystemExit(f"not a camt.053 namespace: {ns}")
    version = m.group(1)
    module = __import__(
        f"pyiso20022.camt.camt_053_001_{version}", fromlist=["Document"]
    )
    parser = XmlParser(
        config=ParserConfig(
            fail_on_unknown_properties=True,
            fail_on_unknown_attributes=True,
            fail_on_converter_warnings=True,
        )
    )
    document = parser.parse(path, module.Document)
    problems = []
    walk_element(root, module.Document, "Document", problems)
    walk_values(document, "Document", problems)
    if problems:
        raise SystemExit("schema: " + "; ".join(problems[:20]))
    return version, document


@functools.cache
def binding(cls):
    """A binding's elements in schema order: {xml name: (position, child
    class)}, and the names that are required."""
    import typing

    hints = typing.get_type_hints(cls)
    order, required = {}, []
    for f in dataclasses.fields(cls):
        if f.metadata.get("type", "Element") == "Element" and "name" in f.metadata:
            name = f.metadata["name"]
            order[name] = (len(order), inner_class(hints[f.name]))
            if f.metadata.get("required") or f.metadata.get("min_occurs", 0) >= 1:
                required.append(name)
    return order, required


def walk_element(node, cls, where, problems):
    """Child order and required children, against the binding."""
    if not dataclasses.is_dataclass(cls):
        return
    order, required = binding(cls)
    last = -1
    seen = set()
    for child in node:
        if not isinstance(child.tag, str):
            continue
        name = child.tag.rpartition("}")[2]
        if name not in order:
            problems.append(f"{where}: unexpected <{name}>")
            continue
        position, child_cls = order[name]
        if position < last:
            problems.append(f"{where}: <{name}> out of order")
        last = max(last, position)
        seen.add(name)
        walk_element(child, child_cls, where + "/" + name, problems)
    for name in required:
        if name not in seen:
            problems.append(f"{where}: <{name}> is required")


def inner_class(t):
    import typing

    args = typing.get_args(t)
    if not args:
        return t
    for a in args:
        inner = inner_class(a)
        if dataclasses.is_dataclass(inner):
            return inner
    return args[0]


def walk_values(obj, where, problems):
    """Facets of every value: lengths, patterns, amounts' digits and bounds."""
    if isinstance(obj, list):
        for i, item in enumerate(obj):
            walk_values(item, f"{where}[{i}]", problems)
        return
    if not dataclasses.is_dataclass(obj):
        return
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        here = f"{where}/{f.metadata.get('name', f.name)}"
        if value is None:
            if f.metadata.get("required"):
                problems.append(f"{here} is required")
            continue
        if dataclasses.is_dataclass(value) or isinstance(value, list):
            walk_values(value, here, problems)
            continue
        meta = f.metadata
        text = value.value if hasattr(value, "value") and not isinstance(value, Decimal) else value
        if isinstance(text, str):
            if "max_length" in meta and len(text) > meta["max_length"]:
                problems.append(f"{here}: {len(text)} characters, at most {meta['max_length']}")
            if "min_length" in meta and len(text) < meta["min_length"]:
                problems.append(f"{here}: shorter than {meta['min_length']}")
            if "pattern" in meta and not re.fullmatch(meta["pattern"], text):
                problems.append(f"{here}: {text!r} does not match {meta['pattern']}")
        if isinstance(value, Decimal):
            if "min_inclusive" in meta and value < meta["min_inclusive"]:
                problems.append(f"{here}: {value} below {meta['min_inclusive']}")
            sign, digits, exponent = value.as_tuple()
            if "fraction_digits" in meta and -exponent > meta["fraction_digits"]:
                problems.append(f"{here}: {value} has too many decimals")
            if "total_digits" in meta and len(digits) > meta["total_digits"]:
                problems.append(f"{here}: {value} has too many digits")


# pycamt's entry reader searches its statement again for each entry: past
# this many entries in a file its reading is left to the bindings alone.
PYCAMT_MAX_ENTRIES = 10_000


def entries_of(version, document):
    """(IBAN, signed amount, status, reference) of each entry, as the
    schema's bindings parsed them."""
    for stmt in document.bk_to_cstmr_stmt.stmt:
        iban = stmt.acct.id.iban
        for ntry in stmt.ntry:
            amount = ntry.amt.value
            indicator = getattr(ntry.cdt_dbt_ind, "value", ntry.cdt_dbt_ind)
            if indicator == "DBIT":
                amount = -amount
            status = ntry.sts if version == "02" else ntry.sts.cd
            status = getattr(status, "value", status)
            yield iban, amount, status, ntry.acct_svcr_ref


def camt(path):
    from pycamt.parser import Camt053Parser

    version, document = schema_check(path)
    parsed = Camt053Parser.from_file(path)
    out = {}
    for info in parsed.get_statement_info():
        out[info["IBAN"]] = {
            "version": version,
            "currency": info["Currency"],
            "opening": str(Decimal(info["OpeningBalance"])),
            "closing": str(Decimal(info["ClosingBalance"])),
            "booked_sum": Decimal(0),
            "booked": 0,
            "pending": 0,
            "refs": set(),
        }
    by_bindings = list(entries_of(version, document))
    for iban, amount, status, ref in by_bindings:
        account = out[iban]
        if status == "BOOK":
            account["booked"] += 1
            account["booked_sum"] += amount
            account["refs"].add(ref)
        elif status == "PDNG":
            account["pending"] += 1
    if len(by_bindings) <= PYCAMT_MAX_ENTRIES:
        # pycamt reads the same entries.
        by_pycamt = []
        for tx in parsed.get_transactions():
            amount = Decimal(tx["Amount"])
            if tx["CreditDebitIndicator"] == "DBIT":
                amount = -amount
            by_pycamt.append((tx["AccountIBAN"], amount, tx["Status"], tx["TransactionID"]))
        if sorted(by_pycamt) != sorted(by_bindings):
            raise SystemExit("pycamt and the schema bindings read different entries")
    for account in out.values():
        account["booked_sum"] = str(account["booked_sum"])
        account["unique_refs"] = len(account.pop("refs"))
        account["read_by_pycamt"] = len(by_bindings) <= PYCAMT_MAX_ENTRIES
    return out


# ---------------------------------------------------------------- OFX

def ofx(path):
    from ofxtools.Parser import OFXTree

    tree = OFXTree()
    tree.parse(path)
    converted = tree.convert()
    out = {}
    for stmt in converted.statements:
        rows = list(stmt.banktranlist)
        out[stmt.account.acctid] = {
            "currency": stmt.curdef,
            "count": len(rows),
            "sum": str(sum((Decimal(r.trnamt) for r in rows), Decimal(0))),
            "ledger": str(stmt.ledgerbal.balamt),
            "unique_fitids": len({r.fitid for r in rows}),
        }
    return out


def main():
    kind, path = sys.argv[1], sys.argv[2]
    if kind == "qif":
        result = qif(path, *(sys.argv[3:4]))
    elif kind == "camt":
        result = camt(path)
    elif kind == "ofx":
        result = ofx(path)
    else:
        raise SystemExit(f"unknown kind {kind}")
    print(json.dumps(result, ensure_ascii=False, default=str))


if __name__ == "__main__":
    decimal.getcontext().prec = 40
    main()
