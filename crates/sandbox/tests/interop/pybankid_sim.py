"""pybankid (from PyPI, unmodified) against the bankbridge BankID simulator.

pybankid hard-codes BankID's own URLs and CAs, so a subclass points it at
the simulator: the base URL (ending in "/", since pybankid joins endpoint
names onto it), the simulator's CA, and the RP certificate/key pair the
simulator generated. It then replays the expectations of pybankid's live
tests against appapi2.test.bankid.com, plus full flows in which a
simulated user scans the QR code pybankid itself generates.

Usage: pybankid_sim.py BASE_URL CA_PEM RP_CERT_PEM RP_KEY_PEM CONTROL_URL
Prints one line per check and "N passed, N failed"; exits 1 on a failure.
"""

import asyncio
import base64
import json
import random
import ssl
import sys
import time
import traceback
import uuid
from datetime import date, timedelta
from urllib.parse import urljoin

import httpx
from bankid import BankIDAsyncClient, BankIDClient
from bankid.exceptions import AlreadyInProgressError, InvalidParametersError

ENDPOINTS = [
    ("_auth_endpoint", "auth"),
    ("_phone_auth_endpoint", "phone/auth"),
    ("_sign_endpoint", "sign"),
    ("_phone_sign_endpoint", "phone/sign"),
    ("_collect_endpoint", "collect"),
    ("_cancel_endpoint", "cancel"),
]


def point_at(client, base_url, ca_file):
    client.api_url = base_url
    client.verify_cert = ca_file
    client.ctx = ssl.create_default_context(cafile=ca_file)
    for attr, path in ENDPOINTS:
        setattr(client, attr, urljoin(base_url, path))


class SimClient(BankIDClient):
    def __init__(self, certificates, base_url, ca_file, request_timeout=10):
        super().__init__(certificates, test_server=True, request_timeout=request_timeout)
        point_at(self, base_url, ca_file)
        self.client.close()
        self.client = httpx.Client(
            cert=self.certs,
            headers={"Content-Type": "application/json"},
            verify=self.ctx,
            timeout=request_timeout,
        )


class SimAsyncClient(BankIDAsyncClient):
    def __init__(self, certificates, base_url, ca_file, request_timeout=10):
        super().__init__(certificates, test_server=True, request_timeout=request_timeout)
        point_at(self, base_url, ca_file)
        self.client = httpx.AsyncClient(
            cert=self.certs,
            headers={"Content-Type": "application/json"},
            verify=self.ctx,
            timeout=request_timeout,
        )


def random_personal_number():
    """A Luhn-valid personal number for a random adult, as pybankid's tests make."""

    def luhn_digit(digits):
        total = 0
        for i, ch in enumerate(reversed(digits)):
            d = int(ch)
            if i % 2 == 0:
                d *= 2
                if d > 9:
                    d -= 9
            total += d
        return str((10 - total % 10) % 10)

    born = date(1940, 1, 1) + timedelta(days=random.randrange(0, 60 * 365))
    head = born.strftime("%Y%m%d") + "%03d" % random.randrange(0, 1000)
    return head + luhn_digit(head[2:])


def raises(exc, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except exc as e:
        return e
    raise AssertionError("expected %s" % exc.__name__)


class Checks:
    def __init__(self, base_url, ca, cert, key, control):
        self.certs = (cert, key)
        self.base_url = base_url
        self.ca = ca
        self.client = SimClient(self.certs, base_url, ca)
        self.control = httpx.Client(base_url=control.rstrip("/") + "/_sandbox/bankid/", timeout=10)

    def user(self, action, **body):
        r = self.control.post(action, json=body)
        assert r.status_code == 200, "control %s: %s %s" % (action, r.status_code, r.text)
        return r.json()

    def scan_and_approve(self, out, start_t, pnr):
        qr = self.client.generate_qr_code_content(out["qrStartToken"], start_t, out["qrStartSecret"])
        assert qr.startswith("bankid." + out["qrStartToken"] + "."), qr
        self.user("scan", qrData=qr)
        self.user("orders/%s/approve" % out["orderRef"], personalNumber=pnr)

    # --- pybankid's live tests, replayed ---

    def test_authentication_returns_a_uuid_order_ref(self):
        out = self.client.authenticate("127.0.0.1")
        assert isinstance(out, dict)
        uuid.UUID(out["orderRef"], version=4)
        for k in ("autoStartToken", "qrStartToken", "qrStartSecret"):
            uuid.UUID(out[k])
        self.client.cancel(out["orderRef"])

    def test_collect_is_pending(self):
        out = self.client.authenticate("127.0.0.1", requirement={"personalNumber": random_personal_number()})
        collect = self.client.collect(out["orderRef"])
        assert collect["status"] == "pending", collect
        assert collect["hintCode"] in ("outstandingTransaction", "noClient"), collect
        self.client.cancel(out["orderRef"])

    def test_invalid_order_ref_raises_error(self):
        raises(InvalidParametersError, self.client.collect, "invalid-uuid")

    def test_already_in_progress_raises_error_auth(self):
        pnr = random_personal_number()
        self.client.authenticate("127.0.0.1", requirement={"personalNumber": pnr})
        raises(AlreadyInProgressError, self.client.authenticate, "127.0.0.1", requirement={"personalNumber": pnr})

    def test_already_in_progress_raises_error_sign(self):
        pnr = random_personal_number()
        self.client.sign("127.0.0.1", requirement={"personalNumber": pnr}, user_visible_data="Text to sign")
        e = raises(
            AlreadyInProgressError,
            self.client.sign,
            "127.0.0.1",
            requirement={"personalNumber": pnr},
            user_visible_data="Text to sign",
        )
        assert e.rfa == 4
        assert e.json["errorCode"] == "alreadyInProgress"

    def test_authentication_and_cancel(self):
        out = self.client.authenticate("127.0.0.1", requirement={"personalNumber": random_personal_number()})
        uuid.UUID(out["orderRef"], version=4)
        collect = self.client.collect(out["orderRef"])
        assert collect["status"] == "pending" and collect["hintCode"] in ("outstandingTransaction", "noClient")
        assert self.client.cancel(out["orderRef"]) is True
        raises(InvalidParametersError, self.client.collect, out["orderRef"])

    def test_cancel_with_invalid_uuid(self):
        raises(InvalidParametersError, self.client.cancel, str(uuid.uuid4()))

    def test_api_url_and_cert_point_at_the_simulator(self):
        assert self.client.api_url == self.base_url
        assert self.client._collect_endpoint == self.base_url + "collect"
        assert self.client.verify_cert == self.ca

    # --- full flows with the simulated user ---

    def test_authenticate_scan_approve_collect(self):
        pnr = random_personal_number()
        out = self.client.authenticate("192.0.2.10", requirement={"personalNumber": pnr})
        start_t = time.time()
        self.scan_and_approve(out, start_t, pnr)
        collect = self.client.collect(out["orderRef"])
        assert collect["status"] == "complete", collect
        cd = collect["completionData"]
        assert cd["user"]["personalNumber"] == pnr
        assert cd["user"]["name"] == cd["user"]["givenName"] + " " + cd["user"]["surname"]
        assert cd["device"]["ipAddress"] == "192.0.2.10"
        date.fromisoformat(cd["bankIdIssueDate"])
        xml = base64.b64decode(cd["signature"]).decode("utf-8")
        assert "<funcId>Identification</funcId>" in xml
        assert base64.b64decode(cd["ocspResponse"])[:1] == b"\x30"
        # Collectable again within its window.
        assert self.client.collect(out["orderRef"])["status"] == "complete"

    def test_qr_from_the_wrong_moment_is_refused(self):
        out = self.client.authenticate("127.0.0.1")
        # A code for an order started 10 s ago is 10 s too old for this one.
        stale = self.client.generate_qr_code_content(out["qrStartToken"], time.time() - 10, out["qrStartSecret"])
        assert stale.split(".")[2] == "10"
        r = self.control.post("scan", json={"qrData": stale})
        assert r.status_code == 422 and r.json()["error"] == "qr_from_future", r.text
        forged = self.client.generate_qr_code_content(out["qrStartToken"], time.time(), "wrong-secret")
        r = self.control.post("scan", json={"qrData": forged})
        assert r.status_code == 422 and r.json()["error"] == "forged_qr", r.text
        assert self.client.collect(out["orderRef"])["hintCode"] == "outstandingTransaction"
        self.client.cancel(out["orderRef"])

    def test_sign_scan_approve_collect(self):
        pnr = random_personal_number()
        text = "Jag godkänner köpet: 1 000 kr"
        out = self.client.sign(
            "127.0.0.1",
            user_visible_data=text,
            user_non_visible_data="order-4711",
            user_visible_data_format="simpleMarkdownV1",
        )
        start_t = time.time()
        self.scan_and_approve(out, start_t, pnr)
        cd = self.client.collect(out["orderRef"])["completionData"]
        assert cd["user"]["personalNumber"] == pnr
        xml = base64.b64decode(cd["signature"]).decode("utf-8")
        assert "<funcId>Signing</funcId>" in xml
        visible = xml.split('visible="wysiwys">')[1].split("<")[0]
        assert base64.b64decode(visible).decode("utf-8") == text

    def test_decline_is_user_cancel(self):
        out = self.client.authenticate("127.0.0.1")
        self.user("autostart", autoStartToken=out["autoStartToken"])
        assert self.client.collect(out["orderRef"])["hintCode"] in ("started", "userSign")
        self.user("orders/%s/decline" % out["orderRef"])
        collect = self.client.collect(out["orderRef"])
        assert collect["status"] == "failed" and collect["hintCode"] == "userCancel", collect

    def test_phone_authenticate(self):
        pnr = random_personal_number()
        out = self.client.phone_authenticate(pnr, "user")
        assert list(out) == ["orderRef"], out
        collect = self.client.collect(out["orderRef"])
        assert collect["status"] == "pending" and collect["hintCode"] == "userCallConfirm", collect
        self.user("orders/%s/approve" % out["orderRef"])
        cd = self.client.collect(out["orderRef"])["completionData"]
        assert cd["user"]["personalNumber"] == pnr

    def test_phone_sign_declined_call(self):
        pnr = random_personal_number()
        out = self.client.phone_sign(pnr, "RP", user_visible_data="Agree on the phone")
        self.user("orders/%s/decline" % out["orderRef"])
        collect = self.client.collect(out["orderRef"])
        assert collect["status"] == "failed" and collect["hintCode"] == "userDeclinedCall", collect

    def test_phone_sign_completes(self):
        pnr = random_personal_number()
        out = self.client.phone_sign(pnr, "RP", user_visible_data="Agree on the phone")
        self.user("orders/%s/confirm-call" % out["orderRef"])
        self.user("orders/%s/approve" % out["orderRef"])
        cd = self.client.collect(out["orderRef"])["completionData"]
        assert cd["user"]["personalNumber"] == pnr

    def test_async_client(self):
        async def flow():
            client = SimAsyncClient(self.certs, self.base_url, self.ca)
            pnr = random_personal_number()
            out = await client.authenticate("127.0.0.1", requirement={"personalNumber": pnr})
            start_t = time.time()
            collect = await client.collect(out["orderRef"])
            assert collect["hintCode"] in ("outstandingTransaction", "noClient")
            try:
                await client.authenticate("127.0.0.1", requirement={"personalNumber": pnr})
                raise AssertionError("expected AlreadyInProgressError")
            except AlreadyInProgressError:
                pass
            out = await client.authenticate("127.0.0.1", requirement={"personalNumber": pnr})
            start_t = time.time()
            self.scan_and_approve(out, start_t, pnr)
            cd = (await client.collect(out["orderRef"]))["completionData"]
            assert cd["user"]["personalNumber"] == pnr
            try:
                await client.cancel(out["orderRef"])
                raise AssertionError("cancelling a complete order must fail")
            except InvalidParametersError:
                pass
            await client.client.aclose()

        asyncio.run(flow())


def main():
    if len(sys.argv) != 6:
        print(__doc__)
        return 2
    checks = Checks(*sys.argv[1:])
    names = sorted(n for n in dir(checks) if n.startswith("test_"))
    passed = failed = 0
    for name in names:
        try:
            getattr(checks, name)()
            passed += 1
            print("ok   %s" % name)
        except Exception:
            failed += 1
            print("FAIL %s" % name)
            traceback.print_exc(file=sys.stdout)
    print(json.dumps({"pybankid": __import__("bankid").__version__, "httpx": httpx.__version__}))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
