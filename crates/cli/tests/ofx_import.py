"""Import OFX files one after the other the way accounting tools do: a
transaction is new when its (account, FITID) was not seen before. Parses
with ofxtools (PyPI), which checks the files against the OFX specification.

Usage: ofx_import.py FIRST.ofx SECOND.ofx
Prints {"first": N, "second": N, "imported": N, "second_new": N,
"first_missing_in_second": N} as JSON.
"""
import json
import sys

from ofxtools.Parser import OFXTree


def fitids(path):
    tree = OFXTree()
    tree.parse(path)
    ofx = tree.convert()
    seen = []
    for stmt in ofx.statements:
        account = stmt.account.acctid
        for trn in stmt.banktranlist:
            seen.append((account, trn.fitid))
    if len(seen) != len(set(seen)):
        raise SystemExit(f"{path}: a FITID appears twice in one file")
    return seen


def main():
    first, second = (fitids(p) for p in sys.argv[1:3])
    imported = set()
    for key in first + second:
        imported.add(key)
    first_set, second_set = set(first), set(second)
    print(json.dumps({
        "first": len(first),
        "second": len(second),
        "imported": len(imported),
        "second_new": len(second_set - first_set),
        "first_missing_in_second": len(first_set - second_set),
    }))


if __name__ == "__main__":
    main()
