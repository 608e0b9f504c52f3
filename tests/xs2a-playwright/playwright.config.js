// Runs the story's xs2a.spec.ts against bankbridge's sandbox playground.
// The spec uses only the `request` fixture (APIRequestContext), which needs no
// browser: no project names a browser or device, and nothing here calls
// `playwright install`, so no browser is downloaded or launched.
const { defineConfig } = require('@playwright/test');

module.exports = defineConfig({
  testDir: '.',
  testMatch: 'xs2a.spec.ts',
  // Playwright's default per-test timeout; the flow is 11 requests.
  timeout: 30_000,
  retries: 0,
  workers: 1,
  forbidOnly: true,
  reporter: [['list', { printSteps: true }]],
});
