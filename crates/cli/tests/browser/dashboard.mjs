// The dashboard as people use it, in Debian's Chromium driven by
// playwright-core. Run by crates/cli/tests/dashboard_browser.rs against one
// `bankbridge serve` holding a synced sandbox bank, flow checks, a virtual
// card in vpcd and the BankID simulator:
//
//   node dashboard.mjs CONFIG_JSON
//
// CONFIG_JSON: {base, adminLink, readToken, sandboxRoot, keypad: {baseUrl,
// identifier, pin}, card: {reader, pin}, klarna: {baseUrl, username, token,
// bankCode, countryCode, pin}, shots}. Exits non-zero with the
// failed step on stderr; saves a screenshot of each page in `shots`.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const config = JSON.parse(process.argv[2] ?? '{}');
const { base, adminLink, readToken, sandboxRoot, keypad, card, klarna, shots } = config;
if (!base || !adminLink || !readToken || !shots) {
  console.error('usage: node dashboard.mjs CONFIG_JSON');
  process.exit(2);
}

const launch = (extra = {}) => chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'bb-chromium-')), {
  executablePath: process.env.BANKBRIDGE_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  acceptDownloads: true,
  viewport: { width: 1280, height: 900 },
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-quic',
  ],
  ...extra,
});
const context = await launch();
const page = context.pages()[0] ?? (await context.newPage());
// Any script of a label that ran would open a dialog or set this flag.
page.on('dialog', (d) => {
  console.error(`a dialog opened: ${d.message()}`);
  process.exit(1);
});
const pwned = async () => page.evaluate(() => window.__pwned);
const shot = (name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
const step = async (name, body) => {
  const started = Date.now();
  try {
    await body();
    console.log(`ok: ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    await page.screenshot({ path: join(shots, `failed-${name.replace(/\W+/g, '-')}.png`), fullPage: true }).catch(() => {});
    console.error(`failed: ${name}\n${e.stack ?? e}`);
    await context.close();
    process.exit(1);
  }
};
const control = async (path, body = {}) => {
  const res = await fetch(`${sandboxRoot}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json().catch(() => ({})) };
};
const until = async (what, test, ms = 30000) => {
  const end = Date.now() + ms;
  for (;;) {
    if (await test()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await page.waitForTimeout(200);
  }
};
const XSS_LABEL = '<script>window.__pwned = 1</script> payroll card';
const XSS_CATEGORY = '"><img src=x onerror="window.__pwned=2">';

await step('a visitor is sent to sign in, and a wrong token is refused', async () => {
  await page.goto(`${base}/`);
  assert.match(page.url(), /\/login$/);
  await shot('login');
  await page.getByLabel('API token').fill('bb_notatoken');
  await page.getByRole('button', { name: 'Sign in' }).click();
  assert.match(await page.getByRole('alert').innerText(), /not valid/);
});

await step('a one-time link signs the admin in, once', async () => {
  await page.goto(adminLink);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Overview' }).waitFor();
  const again = await context.newPage();
  await again.goto(adminLink);
  await again.getByRole('button', { name: 'Sign in' }).click();
  assert.match(await again.getByRole('alert').innerText(), /used, expired or unknown/);
  await again.close();
});

await step('the overview shows balances and three kinds of chart', async () => {
  await page.goto(`${base}/`);
  const balance = await page.locator('main table tbody tr').first().locator('td.num').innerText();
  assert.match(balance, /^-?\d+(\.\d+)? [A-Z]{3}$/, `a balance with its currency: ${balance}`);
  assert.ok((await page.locator('svg.chart polyline.line').count()) >= 1, 'a balance line per account');
  assert.ok((await page.locator('svg.chart rect.debit').count()) >= 12, 'money out per month');
  const from = new Date(Date.now() - 365 * 86400e3).toISOString().slice(0, 10);
  await page.getByRole('form', { name: 'Period of the spending chart' }).getByLabel('From').fill(from);
  await page.getByRole('form', { name: 'Period of the spending chart' }).getByRole('button', { name: 'Show' }).click();
  await page.waitForURL(/from=/);
  assert.ok((await page.locator('svg.chart rect.spend').count()) >= 1, 'spending bars');
  const title = await page.locator('svg.chart rect.debit title').first().textContent();
  assert.match(title, /^\d{4}-\d{2} out: -?\d/, `an exact value on hover: ${title}`);
  await shot('overview');
});

await step('transactions are filtered, paged, categorised by hand and exported', async () => {
  await page.getByRole('link', { name: 'Transactions' }).click();
  await page.getByRole('heading', { name: 'Transactions' }).waitFor();
  assert.equal(await page.locator('main table tbody tr').count(), 50, 'a full first page');
  await page.getByRole('link', { name: 'Next page' }).click();
  await page.getByRole('link', { name: 'First page' }).waitFor();
  await page.getByLabel('Order').selectOption('desc');
  await page.getByLabel('Status').selectOption('booked');
  await page.getByRole('button', { name: 'Show' }).click();
  await page.waitForURL(/status=booked/);
  const statuses = await page.locator('main table tbody tr td:nth-child(7)').allInnerTexts();
  assert.ok(statuses.length > 0 && statuses.every((s) => s === 'booked'), 'only booked rows');
  // A category by hand, holding markup: it stays text.
  const row = page.locator('main table tbody tr').first();
  await row.getByRole('textbox').fill(XSS_CATEGORY);
  await row.getByRole('button', { name: 'Set' }).click();
  await page.waitForURL(/status=booked/);
  assert.equal(await page.locator('main table tbody tr').first().getByRole('textbox').inputValue(), XSS_CATEGORY);
  assert.equal(await pwned(), undefined);
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('link', { name: 'CSV' }).click(),
  ]);
  const csv = readFileSync(await download.path(), 'utf8').trim().split('\r\n');
  assert.match(csv[0], /^id,account_id,status,booking_date/);
  assert.ok(csv.length > 1 && csv.slice(1).every((l) => l.split(',')[2] === 'booked'), 'the filter held');
  // The other formats are one click away too: QIF and camt.053 here.
  const [qif] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('link', { name: 'QIF', exact: true }).click(),
  ]);
  assert.match(readFileSync(await qif.path(), 'utf8'), /^!Account\nN.+\nTBank\n/);
  const [camt] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('link', { name: 'CAMT.053', exact: true }).click(),
  ]);
  assert.match(readFileSync(await camt.path(), 'utf8'), /camt\.053\.001\.08[\s\S]*<Cd>CLBD<\/Cd>/);
  await shot('transactions');
  await page.goto(`${base}/transactions?min_amount=lots`);
  assert.match(await page.getByRole('alert').innerText(), /min_amount/);
  // The hand-set category is in the spending chart, as text.
  await page.goto(`${base}/?from=2000-01-01`);
  assert.equal(await pwned(), undefined);
  assert.ok((await page.locator('svg.chart text', { hasText: 'onerror' }).count()) >= 1, 'the category, as text');
});

await step('a keypad connection is added, synced live and its 2FA approved from the page', async () => {
  await page.getByRole('link', { name: 'Connections' }).click();
  await page.getByRole('heading', { name: 'Connections' }).waitFor();
  await page.locator('summary', { hasText: 'Keypad bank' }).click();
  const form = page.locator('details.add[open] form');
  await form.getByLabel('Name in bankbridge').fill('keypad-main');
  await form.getByLabel('Bank web API address').fill(keypad.baseUrl);
  await form.getByLabel('Customer number').fill(keypad.identifier);
  await form.getByLabel(/^PIN/).fill(keypad.pin);
  await form.getByLabel('Sync on its own').selectOption('');
  await form.getByRole('button', { name: 'Add connection' }).click();
  await page.getByRole('heading', { name: 'Connection keypad-main' }).waitFor();
  assert.ok(!(await page.content()).includes(keypad.pin), 'the PIN is never shown');
  await page.getByRole('button', { name: 'Sync now' }).click();
  await page.waitForURL(/\/syncs\/\d+$/);
  // The bank asks for an approval per contract: the person approves each on
  // their phone (the simulator's control), the page goes on by itself.
  await page.getByRole('heading', { name: 'Approve at your bank' }).waitFor({ timeout: 30000 });
  await shot('sync-approval');
  let approvals = 0;
  await until('the sync to finish', async () => {
    if (await page.locator('#live[data-done]').count()) return true;
    if (await page.getByRole('heading', { name: 'Approve at your bank' }).count()) {
      const r = await control('/_sandbox/keypad/approve');
      if (r.status === 200) approvals += 1;
    }
    return false;
  }, 90000);
  assert.ok(approvals >= 1, 'approved at least once');
  assert.match(await page.locator('#live .big').innerText(), /succeeded/);
  assert.match(await page.locator('#live').innerText(), /\d+ new/);
  await shot('sync');
  await page.goto(`${base}/connections`);
  assert.match(await page.locator('tr', { hasText: 'keypad-main' }).innerText(), /synced/);
  await shot('connections');
});

await step('an Enable Banking connection takes its private key in a text area', async () => {
  await page.locator('summary', { hasText: 'Enable Banking' }).click();
  const form = page.locator('details.add[open] form');
  const key = form.getByLabel("The application's private key (PEM)");
  assert.equal(await key.evaluate((e) => e.tagName), 'TEXTAREA', 'a PEM key spans lines');
  await key.fill('-----BEGIN PRIVATE KEY-----\nMIIEvQ\n-----END PRIVATE KEY-----');
  assert.match(await key.inputValue(), /\n/, 'line breaks kept');
  await shot('add-enablebanking');
  await page.locator('summary', { hasText: 'Enable Banking' }).click();
});

await step('a Klarna connection is linked from the page: the bank PIN typed once, the bank page agreed', async () => {
  await page.goto(`${base}/connections`);
  await page.locator('summary', { hasText: 'Klarna open banking' }).click();
  const form = page.locator('details.add[open] form');
  await form.getByLabel('Name in bankbridge').fill('klarna-main');
  await form.getByLabel('Bank web API address').fill(klarna.baseUrl);
  await form.getByLabel(/login name at the bank/).fill(klarna.username);
  await form.getByLabel('Klarna Open Banking API token').fill(klarna.token);
  await form.getByLabel('Settings (optional)').fill(`bank_code=${klarna.bankCode}\ncountry_code=${klarna.countryCode}`);
  await form.getByLabel('Sync on its own').selectOption('');
  await form.getByRole('button', { name: 'Add connection' }).click();
  await page.getByRole('heading', { name: 'Connection klarna-main' }).waitFor();
  assert.ok(!(await page.content()).includes(klarna.token), 'the API token is never shown');
  await page.getByRole('button', { name: 'Sync now' }).click();
  await page.waitForURL(/\/syncs\/\d+$/);
  // Klarna's form for the bank asks for the PIN: a password field, sent once.
  const pin = page.locator('input[type=password][name=code]');
  await pin.waitFor({ timeout: 30000 });
  assert.match(await page.locator('form.question').innerText(), /PIN at the bank/);
  await shot('sync-klarna-pin');
  await pin.fill(klarna.pin);
  await page.getByRole('button', { name: 'Send', exact: true }).click();
  // Then the bank's own page, in this tab; it sends the browser back here.
  const bankPage = page.getByRole('link', { name: "Open the bank's page" });
  await bankPage.waitFor({ timeout: 30000 });
  await page.goto(await bankPage.getAttribute('href'));
  await shot('klarna-bank-page');
  await page.getByRole('button', { name: 'Agree' }).click();
  await page.waitForURL(/\/syncs\/\d+$/);
  await until('the Klarna sync to finish', async () => (await page.locator('#live[data-done]').count()) > 0, 60000);
  assert.match(await page.locator('#live .big').innerText(), /succeeded/);
  assert.match(await page.locator('#live').innerText(), /\d+ new/);
  await shot('sync-klarna');
});

await step('documents are listed, shown and downloaded', async () => {
  await page.getByRole('link', { name: 'Documents' }).click();
  await page.getByRole('heading', { name: 'Documents' }).waitFor();
  const links = page.locator('main table tbody tr td:nth-child(2) a');
  assert.ok((await links.count()) >= 1, 'the keypad bank\'s statements');
  await shot('documents');
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.locator('main table tbody tr').first().getByRole('link', { name: 'Download' }).click(),
  ]);
  assert.ok(readFileSync(await download.path()).subarray(0, 5).toString() === '%PDF-', 'a PDF');
  await links.first().click();
  const frame = page.locator('iframe.document');
  await frame.waitFor();
  const inline = await page.evaluate(async (src) => {
    const r = await fetch(src);
    return [r.status, r.headers.get('content-type'), r.headers.get('content-disposition')];
  }, await frame.getAttribute('src'));
  assert.equal(inline[0], 200);
  assert.match(inline[1], /application\/pdf/);
  assert.match(inline[2], /^inline/);
  await shot('document');
});

await step('the card team registers a virtual card, tests it, disables and enables it', async () => {
  await page.getByRole('link', { name: 'Cards' }).click();
  await page.getByRole('heading', { name: 'Cards', exact: true }).waitFor();
  await page.getByLabel('Name').fill('Demo Bank');
  await page.getByLabel('Country (two letters, optional)').fill('be');
  await page.getByRole('button', { name: 'Add institution' }).click();
  await page.getByRole('heading', { name: 'Demo Bank (BE)' }).waitFor();
  await page.getByLabel('Card reader').selectOption(card.reader);
  await page.getByLabel('Label').fill(XSS_LABEL);
  await page.getByLabel('Account it belongs to').fill('BE68 5390 0754 7034');
  await page.getByLabel('PIN (kept encrypted, never shown)').fill(card.pin);
  await page.getByRole('button', { name: 'Register card' }).click();
  await page.getByRole('heading', { name: `Card ${XSS_LABEL}` }).waitFor({ timeout: 30000 });
  assert.equal(await pwned(), undefined);
  await page.getByRole('button', { name: 'Compute a login code' }).click();
  await page.getByRole('heading', { name: 'The card answered' }).waitFor({ timeout: 30000 });
  assert.match(await page.locator('.notice .big').innerText(), /^\d{6,}$/);
  await shot('card');
  await page.getByRole('button', { name: /^Disable / }).click();
  assert.match(await page.locator('dl.facts').innerText(), /disabled/);
  await page.getByLabel(/^New PIN/).fill(card.pin);
  await page.getByRole('button', { name: /^Enable / }).click();
  assert.match(await page.locator('dl.facts').innerText(), /active/);
  await page.goto(`${base}/cards`);
  assert.match(await page.locator('main table tbody tr').first().innerText(), /active/);
  assert.equal(await pwned(), undefined);
  await shot('cards');
  await page.getByRole('link', { name: 'The audit log of every card use' }).click();
  assert.match(await page.locator('main table tbody tr').first().innerText(), /login code\s+ok/);
  await shot('card-audit');
});

await step('a check runs now and its run opens as a waterfall', async () => {
  await page.getByRole('link', { name: 'Checks' }).click();
  await page.getByRole('heading', { name: 'Checks', exact: true }).waitFor();
  assert.match(await page.locator('#invalid').locator('..').innerText(), /typo\.toml:\d+/);
  await page.locator('main h2 a').first().click();
  // The button posts a form: let its page load before reloading it (a
  // reload racing that navigation finds no page to reload).
  await Promise.all([
    page.waitForEvent('load'),
    page.getByRole('button', { name: 'Run now' }).click(),
  ]);
  await until('a run of the check', async () => {
    // A reload that meets a navigation still in flight ("not attached to
    // an active page") is tried again on the next round.
    try {
      await page.reload();
    } catch (e) {
      if (!String(e).includes('Not attached to an active page')) throw e;
      return false;
    }
    return (await page.locator('main table tbody tr').count()) > 0;
  }, 60000);
  await shot('check');
  await page.locator('main table tbody tr td a').first().click();
  await page.getByRole('heading', { name: 'Waterfall' }).waitFor();
  assert.ok((await page.locator('svg.waterfall rect').count()) >= 3, 'a bar per step');
  assert.ok((await page.locator('details.step').count()) >= 3);
  await shot('run');
  await page.goto(`${base}/checks`);
  assert.ok((await page.locator('.strip a.run').count()) >= 1, 'the run in the strip');
  await shot('checks');
});

await step('a BankID order is followed to completion with the simulated user', async () => {
  await page.getByRole('link', { name: 'BankID' }).click();
  await page.getByRole('button', { name: 'Start' }).click();
  await page.waitForURL(/\/bankid\/orders\//);
  const qr = page.locator('figure.qr');
  await qr.waitFor();
  const first = await qr.getAttribute('data-qr');
  await until('the QR code to change', async () => (await page.locator('figure.qr').getAttribute('data-qr')) !== first, 5000);
  await shot('bankid');
  const scanned = await control('/_sandbox/bankid/scan', { qrData: await page.locator('figure.qr').getAttribute('data-qr') });
  assert.equal(scanned.status, 200, JSON.stringify(scanned.body));
  const ref = (await page.locator('#order-ref').innerText()).trim();
  // The simulated person, with a valid Swedish personal number.
  const approved = await control(`/_sandbox/bankid/orders/${ref}/approve`, { personalNumber: '199001011239' });
  assert.equal(approved.status, 200, JSON.stringify(approved.body));
  await page.locator('#bankid-name').waitFor({ timeout: 15000 });
  assert.match(await page.locator('#live .big').innerText(), /complete/);
  await shot('bankid-complete');
});

await step('a token is created, shown once, and its odd name stays text', async () => {
  await page.getByRole('link', { name: 'Tokens' }).click();
  await page.getByLabel('Name (to recognise it by)').fill('"><img src=x onerror="window.__pwned=3">');
  await page.getByLabel('Scope').selectOption('read');
  await page.getByRole('button', { name: 'Create token' }).click();
  const plain = await page.getByLabel('The new read token').inputValue();
  assert.match(plain, /^bb_[0-9a-f]{12}_/);
  assert.equal(await page.locator('main img').count(), 0);
  assert.equal(await pwned(), undefined);
  await shot('tokens');
  await page.goto(`${base}/tokens`);
  assert.ok(!(await page.content()).includes(plain), 'never shown again');
});

await step('a SimpleFIN token is made for one account, claimed once by an app, and revoked', async () => {
  await page.goto(`${base}/tokens`);
  await page.getByRole('link', { name: /SimpleFIN access/ }).click();
  await page.getByRole('heading', { name: 'SimpleFIN access' }).waitFor();
  await page.getByLabel('Name (to recognise it by)').fill('actual');
  await page.locator('main input[type=checkbox]').first().check();
  await page.getByRole('button', { name: 'Create SimpleFIN Token' }).click();
  const setup = await page.getByLabel('The SimpleFIN Token').inputValue();
  const claimUrl = Buffer.from(setup, 'base64').toString('utf8');
  assert.match(claimUrl, /\/simplefin\/claim\/[0-9a-f]+$/);
  await shot('simplefin-created');
  // The app's side, as the protocol has it.
  const claimed = await fetch(claimUrl, { method: 'POST' });
  assert.equal(claimed.status, 200);
  const access = new URL((await claimed.text()).trim());
  assert.equal((await fetch(claimUrl, { method: 'POST' })).status, 403, 'claimed once');
  const accounts = () => fetch(`${access.origin}${access.pathname}/accounts`, {
    headers: { Authorization: `Basic ${Buffer.from(`${decodeURIComponent(access.username)}:${decodeURIComponent(access.password)}`).toString('base64')}` },
  });
  const read = await accounts();
  assert.equal(read.status, 200);
  assert.equal((await read.json()).accounts.length, 1, 'only the account ticked');
  await page.goto(`${base}/tokens/simplefin`);
  assert.match(await page.locator('main table').innerText(), /claimed/);
  assert.ok(!(await page.content()).includes(setup), 'never shown again');
  await shot('simplefin');
  await page.getByRole('button', { name: 'Revoke actual' }).click();
  await page.waitForURL(/\/tokens\/simplefin$/);
  assert.match(await page.locator('main table').innerText(), /revoked/);
  assert.equal((await accounts()).status, 403, 'a revoked token reads nothing');
});

await step('the pages fit a phone and the keyboard reaches the navigation', async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  for (const path of ['/', '/transactions', '/connections', '/cards']) {
    await page.goto(`${base}${path}`);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, `${path} is ${overflow}px wider than the phone`);
  }
  await page.goto(`${base}/`);
  await shot('overview-phone');
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.goto(`${base}/`);
  await page.keyboard.press('Tab');
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Overview');
  await page.keyboard.press('Tab');
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: 'Transactions' }).waitFor();
});

await step('another site\'s form cannot sign the admin out', async () => {
  await page.goto(`data:text/html,<form method=post action="${base}/logout"><input name=csrf value=x></form><script>document.forms[0].submit()</script>`);
  await page.waitForLoadState();
  await page.goto(`${base}/`);
  await page.getByRole('heading', { name: 'Overview' }).waitFor();
});

await step('a read session sees no admin action and cannot reach one by URL', async () => {
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL(/\/login$/);
  await page.getByLabel('API token').fill(readToken);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Overview' }).waitFor();
  const nav = await page.getByRole('navigation', { name: 'Pages' }).innerText();
  assert.ok(!nav.includes('Cards') && !nav.includes('Tokens'), nav);
  await page.goto(`${base}/connections`);
  assert.equal(await page.getByRole('button', { name: 'Sync now' }).count(), 0);
  assert.equal(await page.locator('details.add').count(), 0);
  for (const path of ['/tokens', '/tokens/simplefin', '/cards', '/cards/audit']) {
    const res = await page.goto(`${base}${path}`);
    assert.equal(res.status(), 403, path);
    assert.match(await page.getByRole('alert').innerText(), /needs a token with scope admin/);
  }
  await shot('forbidden');
});

await step('every page that only shows data works with JavaScript off', async () => {
  const noscript = await launch({ javaScriptEnabled: false });
  const p = noscript.pages()[0] ?? (await noscript.newPage());
  try {
    await p.goto(`${base}/login`);
    await p.getByLabel('API token').fill(readToken);
    await p.getByRole('button', { name: 'Sign in' }).click();
    await p.getByRole('heading', { name: 'Overview' }).waitFor();
    assert.ok((await p.locator('svg.chart').count()) >= 3, 'the charts are drawn on the server');
    for (const [path, heading] of [['/transactions', 'Transactions'], ['/connections', 'Connections'],
      ['/documents', 'Documents'], ['/checks', 'Checks'], ['/bankid', 'BankID']]) {
      const res = await p.goto(`${base}${path}`);
      assert.equal(res.status(), 200, path);
      await p.getByRole('heading', { name: heading, exact: true }).waitFor();
    }
    await p.goto(`${base}/transactions`);
    await p.getByRole('link', { name: 'Next page' }).click();
    await p.getByRole('link', { name: 'First page' }).waitFor();
    await p.screenshot({ path: join(shots, 'transactions-noscript.png'), fullPage: true });
  } finally {
    await noscript.close();
  }
});

await context.close();
