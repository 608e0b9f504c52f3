// The card-reader browser extension (extension/) as a team uses it, in
// Debian's Chromium driven by playwright-core. Run by
// crates/cli/tests/extension_browser.rs against the sandbox's Cardbank
// pages and one `bankbridge serve` whose card service holds the bank's
// card (a virtual card in vpcd):
//
//   node extension.mjs CONFIG_JSON
//
// CONFIG_JSON: {sandboxRoot, base, writeToken, readToken, adminToken,
// institutionId, cardId, cardNumber, extensionZip, shots}. The extension is
// loaded from the packaged zip, extracted. Exits non-zero with the failed
// step on stderr; saves a screenshot of each page in `shots`
// (extension-*.png).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const config = JSON.parse(process.argv[2] ?? '{}');
const { sandboxRoot, base, writeToken, readToken, adminToken, institutionId, cardId, cardNumber, extensionZip, shots } = config;
if (!sandboxRoot || !base || !writeToken || !readToken || !adminToken || !cardId || !cardNumber || !extensionZip || !shots) {
  console.error('usage: node extension.mjs CONFIG_JSON');
  process.exit(2);
}

// The extension as a user gets it: the packaged zip, extracted.
const extensionDir = mkdtempSync(join(tmpdir(), 'bb-extension-'));
execFileSync('python3', ['-m', 'zipfile', '-e', extensionZip, extensionDir]);
assert.ok(readdirSync(extensionDir).includes('manifest.json'), 'the zip holds manifest.json at its top');

// Extensions need Chromium's new headless mode: Playwright is told the
// browser is headed (so it adds no old-style --headless) and the flag
// comes from here.
const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'bb-chromium-')), {
  executablePath: process.env.BANKBRIDGE_CHROMIUM || '/usr/bin/chromium',
  headless: false,
  viewport: { width: 1100, height: 760 },
  args: [
    '--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-quic',
    `--disable-extensions-except=${extensionDir}`, `--load-extension=${extensionDir}`,
  ],
});
let [worker] = context.serviceWorkers();
worker ??= await context.waitForEvent('serviceworker', { timeout: 15000 });
const extensionId = new URL(worker.url()).host;
const extensionPage = (path) => `chrome-extension://${extensionId}/${path}`;

const page = context.pages()[0] ?? (await context.newPage());
page.on('dialog', (d) => {
  console.error(`a dialog opened: ${d.message()}`);
  process.exit(1);
});
const shot = (name, p = page) => p.screenshot({ path: join(shots, `extension-${name}.png`), fullPage: true });
const step = async (name, body) => {
  const started = Date.now();
  try {
    await body();
    console.log(`ok: ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    for (const [i, p] of context.pages().entries()) {
      await p.screenshot({ path: join(shots, `extension-failed-${name.replace(/\W+/g, '-')}-${i}.png`), fullPage: true }).catch(() => {});
    }
    console.error(`failed: ${name}\n${e.stack ?? e}`);
    await context.close();
    process.exit(1);
  }
};
const api = async (method, path, body, token = adminToken) => {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, body: await res.json().catch(() => ({})) };
};
const stats = async () => (await fetch(`${sandboxRoot}/_sandbox/cardbank/stats`)).json();
const audit = async () => (await api('GET', `/api/v1/cards/audit?card=${cardId}`)).body.data;
const banner = page.locator('#bankbridge-card-status');

// Nothing secret in the page: not the token, not the PIN.
const pageKeepsNoSecret = async (p = page) => {
  const html = await p.content();
  assert.ok(!html.includes(writeToken), 'the token is not in the page');
  const seen = await p.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + document.cookie);
  assert.ok(!seen.includes(writeToken), 'the token is not in the page\'s storage');
};

// The bank's pages get one test hook, in the page's own world: a form sent
// to an address matching sessionStorage['bb-test-hold'] is held (its
// submit event cancelled and kept), so the page can be seen with the code
// the extension filled in before the browser leaves it. `release` sends
// the held form on.
await context.addInitScript(() => {
  window.addEventListener('submit', (event) => {
    const hold = sessionStorage.getItem('bb-test-hold');
    if (!hold || !new RegExp(hold).test(event.target.action)) return;
    sessionStorage.removeItem('bb-test-hold');
    event.preventDefault();
    window.__heldForm = event.target;
    document.documentElement.dataset.heldSubmit = event.submitter ? event.submitter.id : '(no button)';
  }, true);
});

/** Hold the next form the page sends to an address matching `action` (a regex source). */
const holdSubmit = async (action) => {
  await page.evaluate((a) => sessionStorage.setItem('bb-test-hold', a), action);
  return {
    held: async () => {
      await page.locator('html[data-held-submit]').waitFor({ timeout: 30000 });
      return page.locator('html').getAttribute('data-held-submit');
    },
    release: () => page.evaluate(() => HTMLFormElement.prototype.submit.call(window.__heldForm)),
  };
};

/** The sandbox bank's login up to its challenge page: only the card number is typed. */
const startLogin = async () => {
  await page.goto(`${sandboxRoot}/cardbank/login`);
  await page.getByLabel('Card number').pressSequentially(cardNumber);
  await page.getByRole('button', { name: 'Next' }).click();
  await page.waitForURL(/\/cardbank\/login\/[0-9a-f]+$/);
  const challenge = (await page.locator('#challenge').innerText()).trim();
  assert.match(challenge, /^\d{8}$/);
  return challenge;
};

await step('the options page saves the card service and a write token, and never shows the token again', async () => {
  await page.goto(extensionPage('options.html'));
  await page.getByRole('heading', { name: 'bankbridge card reader' }).waitFor();
  assert.match(await page.locator('#token-state').innerText(), /No token is saved/);
  const token = page.getByLabel('Write token');
  assert.equal(await token.getAttribute('type'), 'password');
  // A plain-http card service on another host is refused: the token would cross the network unencrypted.
  await page.getByLabel('Card service address').fill('http://cards.example/');
  await token.fill(writeToken);
  await page.getByRole('button', { name: 'Save', exact: true }).click();
  assert.match(await page.locator('#service-status').innerText(), /Plain http only to 127\.0\.0\.1 or localhost/);
  await page.getByLabel('Card service address').fill(`${base}/`);
  await page.getByRole('button', { name: 'Save', exact: true }).click();
  await page.locator('#service-status.ok').waitFor();
  assert.match(await page.locator('#service-status').innerText(), /^Saved: the card service at http:\/\/127\.0\.0\.1:\d+ and the token\.$/);
  assert.equal(await token.inputValue(), '', 'the token field is emptied');
  assert.match(await page.locator('#token-state').innerText(), /A token is saved/);
  await page.getByRole('button', { name: 'Test connection' }).click();
  await page.locator('#service-status', { hasText: 'Connected' }).waitFor({ timeout: 20000 });
  assert.match(await page.locator('#service-status').innerText(),
    /^Connected to http:\/\/127\.0\.0\.1:\d+: 1 financial institution\(s\), 1 card\(s\) with a card number\. The token may compute codes\.$/);
  // Opened again, the page knows a token is saved but has no way to show it.
  await page.reload();
  await page.locator('#token-state .saved').waitFor();
  assert.equal(await token.inputValue(), '');
  assert.equal(await page.getByLabel('Card service address').inputValue(), base);
  assert.ok(!(await page.content()).includes(writeToken), 'the saved token is not in the options page');
});

await step('own site adapters are checked before they are saved, then run where they say', async () => {
  const area = page.getByLabel('Your own adapters (JSON)');
  const save = page.getByRole('button', { name: 'Save adapters' });
  await area.fill('[{"name": "My bank", ');
  await save.click();
  assert.match(await page.locator('#adapters-status').innerText(), /^Not JSON:/);
  await area.fill(JSON.stringify([{
    name: 'My bank',
    matches: ['http://bank.example/login/*', 'https://bank.example:8443/*'],
    mode: 'sign',
    selectors: { cardNumber: '#pan', response: 'input[name=', submit: '#go' },
  }]));
  await save.click();
  const problems = await page.locator('#adapters-status').innerText();
  assert.match(problems, /^Not saved:/);
  assert.match(problems, /plain http only for 127\.0\.0\.1 or localhost/);
  assert.match(problems, /leave the port out/);
  assert.match(problems, /selectors\."signNumbers" is needed in mode sign/);
  assert.match(problems, /input\[name= is not a valid CSS selector/);
  const mine = {
    name: 'Team test bank',
    matches: ['http://localhost/teambank/*'],
    mode: 'login',
    selectors: { cardNumber: '#card', challenge: '#challenge', response: '#code', submit: 'form button' },
    submit: false,
  };
  await area.fill(JSON.stringify([mine], null, 2));
  await save.click();
  await page.locator('#adapters-status.ok').waitFor();
  assert.equal(await page.locator('#adapters-status').innerText(), 'Saved 1 adapter(s).');
  assert.match(await page.locator('#registered').innerText(), /http:\/\/localhost\/teambank\/\*/);
  const registered = await worker.evaluate(() => chrome.scripting.getRegisteredContentScripts());
  assert.deepEqual(registered.map((s) => [s.id, s.matches, s.js]), [['bankbridge-user-adapters', ['http://localhost/teambank/*'], ['content.js']]]);
  // The shipped adapter is listed, read-only.
  assert.match(await page.locator('#shipped tbody').innerText(), /bankbridge sandbox Cardbank/);
  await shot('options');
  // Content scripts cannot read the extension's storage (the token is there).
  assert.equal(await worker.evaluate(async () => {
    try {
      await chrome.storage.local.setAccessLevel({ accessLevel: 'TRUSTED_CONTEXTS' });
      return 'trusted only';
    } catch (e) {
      return String(e);
    }
  }), 'trusted only');
});

await step('a login: the person types the card number, the extension answers the challenge and logs in', async () => {
  const before = await stats();
  await page.goto(`${sandboxRoot}/cardbank/login`);
  const hold = await holdSubmit('/cardbank/login/[0-9a-f]+$');
  const challenge = await startLogin();
  assert.equal(await hold.held(), 'submit', 'the extension pressed the page\'s own button');
  const code = await page.locator('#response').inputValue();
  assert.match(code, /^\d{6,10}$/, `a code in the response field: ${code}`);
  assert.equal(await banner.getAttribute('data-state'), 'done');
  assert.match(await banner.innerText(), /login code from card ····\d{4} \(Team card\) is filled in; sending it to the bank/);
  assert.equal(await page.locator('#challenge').innerText(), challenge);
  await pageKeepsNoSecret();
  await shot('login');
  await hold.release();
  await page.waitForURL(/\/cardbank\/account$/);
  assert.equal(await page.locator('#welcome').innerText(), 'You are logged in');
  await shot('logged-in');
  const after = await stats();
  assert.equal(after.logins, before.logins + 1);
  assert.equal(after.wrong_codes, before.wrong_codes, 'no wrong code');
  const [last] = await audit();
  assert.equal(last.mode, 'm1');
  assert.equal(last.outcome, 'ok');
});

await step('a payment: the extension signs the amount and the account the page shows', async () => {
  await page.getByRole('link', { name: 'Make a payment' }).click();
  await page.getByLabel('Beneficiary account (IBAN)').fill('BE71 0961 2345 6769');
  await page.getByLabel('Amount (EUR)').fill('12.50');
  const hold = await holdSubmit('/cardbank/payment/[0-9a-f]+$');
  await page.getByRole('button', { name: 'Continue' }).click();
  assert.equal(await hold.held(), 'submit');
  assert.deepEqual(await page.locator('#sign-numbers li').allInnerTexts(), ['1250', '23456769']);
  assert.match(await page.locator('#response').inputValue(), /^\d{6,10}$/);
  assert.match(await banner.innerText(), /sign code from card ····\d{4} \(Team card\) is filled in/);
  await shot('payment');
  await hold.release();
  await page.locator('#paid').waitFor();
  assert.equal(await page.locator('#paid').innerText(), 'Payment sent');
  await shot('payment-sent');
  const s = await stats();
  assert.equal(s.payments, 1);
  assert.equal(s.wrong_codes, 0);
  assert.equal((await audit())[0].mode, 'm2');
});

await step('a site adapter of the user\'s own runs on its bank\'s pages, and leaves sending to the person', async () => {
  // Another bank's login page, served here on loopback: the card number
  // and challenge written with spaces, a field of another name, no submit.
  const spaced = cardNumber.replace(/(\d{4})(?=\d)/g, '$1 ');
  const teamBank = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(`<!doctype html><title>Team bank</title><h1>Team bank</h1>
      <p>Card <b id=card>${spaced}</b></p><p>Challenge <b id=challenge>1234 5678</b></p>
      <form method=post action=/teambank/done><label for=code>Code</label><input id=code name=code><button>Log in</button></form>`);
  });
  await new Promise((r) => teamBank.listen(0, '127.0.0.1', r));
  try {
    const other = await context.newPage();
    await other.goto(`http://localhost:${teamBank.address().port}/teambank/login`);
    const box = other.locator('#bankbridge-card-status[data-state=done]');
    await box.waitFor({ timeout: 20000 });
    assert.match(await box.innerText(), /login code from card ····\d{4} \(Team card\) is filled in: check it and send the form/);
    assert.match(await other.locator('#code').inputValue(), /^\d{6,10}$/);
    assert.match(other.url(), /\/teambank\/login$/, 'not sent: the adapter says submit false');
    await shot('own-adapter', other);
    await other.close();
  } finally {
    teamBank.close();
  }
});

await step('a disabled card: the page says so, nothing is filled, and a reload does not ask again', async () => {
  const disabled = await api('PATCH', `/api/v1/financial-institutions/${institutionId}/cards/${cardId}`, { status: 'disabled' });
  assert.equal(disabled.status, 200, JSON.stringify(disabled.body));
  assert.equal(disabled.body.status, 'disabled');
  await startLogin();
  await page.locator('#bankbridge-card-status[data-state=error]').waitFor({ timeout: 20000 });
  assert.equal(await banner.getAttribute('data-kind'), 'card_disabled');
  assert.equal(await banner.getAttribute('role'), 'alert');
  assert.match(await banner.innerText(), /Card ····\d{4} \(Team card\) is disabled in bankbridge \(disabled by an administrator\)\. Nothing was filled in\./);
  assert.equal(await page.locator('#response').inputValue(), '', 'nothing filled in');
  assert.match(page.url(), /\/cardbank\/login\/[0-9a-f]+$/, 'nothing sent');
  await shot('disabled');
  // The same challenge again (a reload): answered once already, not again.
  const uses = (await audit()).length;
  await page.reload();
  await page.locator('#bankbridge-card-status[data-kind=repeat]').waitFor({ timeout: 10000 });
  assert.match(await banner.innerText(), /answered once already/);
  assert.equal(await page.locator('#response').inputValue(), '');
  assert.equal((await audit()).length, uses, 'the card service was not asked again');
  assert.equal((await stats()).wrong_codes, 0);
});

await step('the popup shows the status of the tab and what happened recently', async () => {
  const popup = await context.newPage();
  await popup.goto(extensionPage('popup.html'));
  const recent = popup.locator('#recent li');
  // The page starts with a "Nothing yet." line until it has read what
  // happened; on a busy machine that line was read instead (CI).
  await popup.locator('#recent li', { hasNotText: 'Nothing yet.' }).first().waitFor();
  const texts = await recent.allInnerTexts();
  assert.match(texts[0], /is disabled in bankbridge/, texts.join('\n'));
  assert.ok(texts.some((t) => /sign code from card ····\d{4} \(Team card\) is filled in/.test(t)), texts.join('\n'));
  assert.ok(texts.some((t) => /login code from card ····\d{4} \(Team card\) is filled in/.test(t)), texts.join('\n'));
  assert.equal(await popup.locator('#recent .state-error').first().getAttribute('data-kind'), 'card_disabled');
  assert.match(await popup.locator('#service').innerText(), /^Card service: http:\/\/127\.0\.0\.1:\d+ · a token is saved$/);
  // Opened as a tab of its own, the popup shows the bank tab: its reload, not answered again.
  assert.equal(await popup.locator('#tab-heading').innerText(), 'The last bank page');
  assert.match(await popup.locator('#tab-status').innerText(), /answered once already/);
  const all = await popup.content();
  assert.ok(!all.includes(writeToken) && !all.includes(cardNumber), 'neither the token nor the full card number');
  await shot('popup', popup);
  await popup.close();
});

await step('enabled again, "Try again" on the same page logs in', async () => {
  const enabled = await api('PATCH', `/api/v1/financial-institutions/${institutionId}/cards/${cardId}`, { status: 'active' });
  assert.equal(enabled.status, 200, JSON.stringify(enabled.body));
  await page.bringToFront();
  await banner.getByRole('button', { name: 'Try again' }).click();
  await page.waitForURL(/\/cardbank\/account$/, { timeout: 20000 });
  const s = await stats();
  assert.equal(s.logins, 2);
  assert.equal(s.wrong_codes, 0);
});

await step('a read token and a refused token are worded as such', async () => {
  const options = await context.newPage();
  await options.goto(extensionPage('options.html'));
  await options.getByLabel('Write token').fill(readToken);
  await options.getByRole('button', { name: 'Save', exact: true }).click();
  await options.locator('#service-status.ok').waitFor();
  await options.getByRole('button', { name: 'Test connection' }).click();
  await options.locator('#service-status.bad').waitFor({ timeout: 20000 });
  assert.match(await options.locator('#service-status').innerText(), /but the token may not compute codes: it needs scope write\.$/);
  await options.getByLabel('Write token').fill('bb_000000000000_notarealtoken');
  await options.getByRole('button', { name: 'Save', exact: true }).click();
  await options.locator('#service-status.ok').waitFor();
  await options.close();
  await page.bringToFront();
  await startLogin();
  await page.locator('#bankbridge-card-status[data-state=error]').waitFor({ timeout: 20000 });
  assert.equal(await banner.getAttribute('data-kind'), 'token_refused');
  assert.match(await banner.innerText(), /refused the token/);
  assert.equal(await page.locator('#response').inputValue(), '');
  await shot('token-refused');
});

await step('a card service that is not there is worded as such', async () => {
  // A loopback port nobody listens on.
  const options = await context.newPage();
  await options.goto(extensionPage('options.html'));
  await options.getByLabel('Card service address').fill('http://127.0.0.1:9');
  await options.getByLabel('Write token').fill(writeToken);
  await options.getByRole('button', { name: 'Save', exact: true }).click();
  await options.locator('#service-status.ok').waitFor();
  await options.getByRole('button', { name: 'Test connection' }).click();
  await options.locator('#service-status.bad').waitFor({ timeout: 20000 });
  assert.match(await options.locator('#service-status').innerText(), /^Cannot reach the card service at http:\/\/127\.0\.0\.1:9/);
  await options.close();
  await page.bringToFront();
  await startLogin();
  await page.locator('#bankbridge-card-status[data-state=error]').waitFor({ timeout: 20000 });
  assert.equal(await banner.getAttribute('data-kind'), 'unreachable');
  assert.equal(await page.locator('#response').inputValue(), '');
  assert.equal((await stats()).wrong_codes, 0, 'no wrong code was ever sent');
});

await context.close();
