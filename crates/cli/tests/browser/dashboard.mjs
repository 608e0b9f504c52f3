// The dashboard as a person uses it, in Debian's Chromium driven by
// playwright-core. Run by crates/cli/tests/dashboard_browser.rs against a
// `bankbridge serve` holding a synced sandbox bank:
//
//   node dashboard.mjs BASE_URL READ_TOKEN SCREENSHOT_DIR
//
// Exits non-zero with the failed step on stderr; saves one screenshot per page.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [base, token, shots] = process.argv.slice(2);
if (!base || !token || !shots) {
  console.error('usage: node dashboard.mjs BASE_URL READ_TOKEN SCREENSHOT_DIR');
  process.exit(2);
}

const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'bb-chromium-')), {
  executablePath: process.env.BANKBRIDGE_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  acceptDownloads: true,
  viewport: { width: 1280, height: 900 },
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-quic',
  ],
});
const page = context.pages()[0] ?? (await context.newPage());
const step = async (name, body) => {
  try {
    await body();
    console.log(`ok: ${name}`);
  } catch (e) {
    await page.screenshot({ path: join(shots, `failed-${name.replace(/\W+/g, '-')}.png`), fullPage: true }).catch(() => {});
    console.error(`failed: ${name}\n${e.stack ?? e}`);
    await context.close();
    process.exit(1);
  }
};

await step('a visitor is sent to sign in', async () => {
  await page.goto(`${base}/`);
  assert.match(page.url(), /\/login$/);
  await page.screenshot({ path: join(shots, 'login.png'), fullPage: true });
});

await step('a wrong token is refused with a reason', async () => {
  await page.getByLabel('API token').fill('bb_notatoken');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').waitFor();
  assert.match(await page.getByRole('alert').innerText(), /not valid/);
});

await step('the token signs in to the overview', async () => {
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Overview' }).waitFor();
  const rows = page.locator('main table tbody tr');
  assert.ok((await rows.count()) >= 1, 'accounts are listed');
  const balance = await rows.first().locator('td.num').innerText();
  assert.match(balance, /^-?\d+\.\d{2} [A-Z]{3}$/, `a balance with its currency: ${balance}`);
  await page.screenshot({ path: join(shots, 'overview.png'), fullPage: true });
});

await step('transactions are filtered and paged', async () => {
  await page.getByRole('link', { name: 'Transactions' }).click();
  await page.getByRole('heading', { name: 'Transactions' }).waitFor();
  const first = await page.locator('main table tbody tr').count();
  assert.equal(first, 50, 'a full first page');
  await page.getByRole('link', { name: 'Next page' }).click();
  await page.getByRole('link', { name: 'First page' }).waitFor();
  await page.getByLabel('Order').selectOption('desc');
  await page.getByLabel('Status').selectOption('booked');
  await page.getByRole('button', { name: 'Show' }).click();
  await page.waitForURL(/status=booked/);
  const statuses = await page.locator('main table tbody tr td:nth-child(7)').allInnerTexts();
  assert.ok(statuses.length > 0 && statuses.every((s) => s === 'booked'), 'only booked rows');
  await page.screenshot({ path: join(shots, 'transactions.png'), fullPage: true });
});

await step('the CSV export keeps the filters', async () => {
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('link', { name: 'CSV' }).click(),
  ]);
  const csv = readFileSync(await download.path(), 'utf8').trim().split('\r\n');
  assert.match(csv[0], /^id,account_id,status,booking_date/);
  assert.ok(csv.length > 1, 'rows exported');
  assert.ok(csv.slice(1).every((line) => line.split(',')[2] === 'booked'), 'the status filter held');
});

await step('a bad filter is explained on the page', async () => {
  await page.goto(`${base}/transactions?min_amount=lots`);
  assert.match(await page.getByRole('alert').innerText(), /min_amount/);
});

await step('signing out ends the session', async () => {
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL(/\/login$/);
  await page.goto(`${base}/transactions`);
  assert.match(page.url(), /\/login$/);
});

await context.close();
