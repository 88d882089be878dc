// The web UI end to end in Debian's chromium, driven by playwright-core. Started by
// tests/tests/e2e/ui.rs with a running sidecar: SP_URL, SP_TOKEN (an operator token),
// SP_SCREENSHOTS (where to save PNGs), SP_CHROMIUM (the browser). Every wait has a deadline;
// nothing sleeps. Prints "ALL STEPS PASSED" at the end; any failure exits non-zero.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const url = process.env.SP_URL;
const token = process.env.SP_TOKEN;
const shots = process.env.SP_SCREENSHOTS;
const executablePath = process.env.SP_CHROMIUM || '/usr/bin/chromium';
if (!url || !token || !shots) throw new Error('SP_URL, SP_TOKEN and SP_SCREENSHOTS are required');

const profile = mkdtempSync(join(tmpdir(), 'sp-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  viewport: { width: 1440, height: 900 },
  deviceScaleFactor: 1,
  timezoneId: 'Europe/Berlin',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = context.pages()[0] || await context.newPage();
page.setDefaultTimeout(30_000);
const problems = [];
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
// 401s are expected: the start-up probe without a token and the wrong token of step 1.
page.on('console', (m) => { if (m.type() === 'error' && !m.text().includes('status of 401')) problems.push(`console: ${m.text()}`); });

let step = 0;
async function check(name, fn) {
  step += 1;
  const t0 = Date.now();
  await fn();
  console.log(`ok ${step} - ${name} (${Date.now() - t0} ms)`);
}
const shot = (name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: false });

try {
  await check('the sign-in page shows and refuses a wrong token', async () => {
    await page.goto(url);
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    await page.getByLabel('API token').fill('sp_wrong');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('This token is not valid.').waitFor();
    await page.getByLabel('API token').fill('');
    await shot('login');
  });

  await check('signing in shows the jobs table', async () => {
    await page.getByLabel('API token').fill(token);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('tr[data-job="colors"]').waitFor();
    await page.locator('tr[data-job="long"]').waitFor();
    await page.locator('.who-name', { hasText: 'e2e-operator' }).waitFor();
    const rows = await page.locator('table.jobs tbody tr').count();
    if (rows !== 3) throw new Error(`expected 3 jobs, saw ${rows}`);
    // A countdown to the next run is shown and ticks.
    const next = await page.locator('tr[data-job="colors"] .countdown').textContent();
    if (!next.startsWith('in ')) throw new Error(`countdown shows ${next}`);
    // The search filters.
    await page.getByLabel('Search jobs').fill('storage');
    await page.waitForFunction(() => document.querySelectorAll('table.jobs tbody tr[data-job]').length === 1);
    await page.locator('tr[data-job="nightly-backup"]').waitFor();
    await page.getByLabel('Search jobs').fill('');
    await page.waitForFunction(() => document.querySelectorAll('table.jobs tbody tr[data-job]').length === 3);
  });

  await check('run now from the job page, and the coloured output arrives live', async () => {
    await page.locator('a.job-name', { hasText: 'colors' }).click();
    await page.getByRole('heading', { name: /colors/ }).waitFor();
    await page.getByRole('button', { name: '▶ Run now' }).click();
    await page.locator('.toast', { hasText: 'colors started' }).waitFor();
    const runLink = page.locator('table.grid a.mono').first();
    await runLink.waitFor();
    await runLink.click();
    const term = page.locator('article.minion[data-minion="minion-1"] .term');
    await term.getByText('green bold').waitFor();
    await term.getByText('done').waitFor();
    const green = await term.locator('span', { hasText: 'green bold' }).evaluate((el) => getComputedStyle(el).color + ' ' + getComputedStyle(el).fontWeight);
    if (!green.startsWith('rgb(34, 197, 94)') || !green.endsWith('700')) throw new Error(`green bold renders as ${green}`);
    const text = await term.innerText();
    if (!text.includes('progress 3/3') || text.includes('progress 1/3')) throw new Error(`\\r was not rendered: ${JSON.stringify(text)}`);
    await page.locator('article.minion[data-minion="minion-1"] .code-ok', { hasText: '0' }).waitFor();
    await page.locator('.run-status .badge', { hasText: 'Succeeded' }).waitFor();
    await shot('run-colors');
  });

  await check('a long job streams, is killed from the UI and shows 143', async () => {
    await page.goto(`${url}/#/job/long`);
    await page.getByRole('heading', { name: /long/ }).waitFor();
    await page.getByRole('button', { name: '▶ Run now' }).click();
    const runLink = page.locator('table.grid a.mono').first();
    await runLink.waitFor();
    await runLink.click();
    const term = page.locator('article.minion[data-minion="minion-2"] .term');
    await term.getByText('tick 3', { exact: true }).waitFor();
    await shot('run-live');
    await page.getByRole('button', { name: '■ Kill run' }).click();
    await page.locator('dialog.modal').getByRole('button', { name: 'Kill' }).click();
    await page.locator('article.minion[data-minion="minion-2"] .code-killed', { hasText: '143' }).waitFor({ timeout: 60_000 });
    await page.locator('.run-status .badge', { hasText: 'Killed' }).waitFor();
    await shot('run-killed');
  });

  await check('the heatmap shows the killed run, and a job on three minions twice', async () => {
    await page.goto(`${url}/#/job/long`);
    await page.locator('.heatmap a.hm-killed').waitFor();
    await page.goto(`${url}/#/job/nightly-backup`);
    await page.getByRole('heading', { name: /nightly-backup/ }).waitFor();
    const env = await page.locator('.env').innerText();
    if (env.includes('hunter2') || !env.includes('DB_PASSWORD')) throw new Error(`env is not redacted: ${env}`);
    for (let i = 1; i <= 2; i++) {
      await page.getByRole('button', { name: '▶ Run now' }).click();
      // Both minions that succeed, and the one that fails, fill a column as the run ends.
      await page.waitForFunction((n) => document.querySelectorAll('.heatmap tr:first-child a.hm-ok').length >= n
        && document.querySelectorAll('.heatmap a.hm-bad').length >= n, i, { timeout: 60_000 });
    }
    if (await page.locator('.heatmap tbody tr').count() !== 3) throw new Error('expected a row per minion');
    await shot('job');
  });

  await check('the job table shows results, rates and history', async () => {
    await page.goto(`${url}/#/`);
    await page.locator('tr[data-job="long"] .badge.s-killed').waitFor();
    await page.locator('tr[data-job="colors"] .strip .cell.s-succeeded').waitFor();
    await shot('jobs');
  });

  await check('the timeline shows each job\'s runs as bars over the range', async () => {
    await page.getByRole('link', { name: 'Timeline' }).click();
    await page.getByRole('heading', { name: 'Timeline' }).waitFor();
    await page.locator('.tl-lane', { hasText: 'long' }).locator('.tl-bar.s-killed').waitFor();
    await page.locator('.tl-lane', { hasText: 'nightly-backup' }).locator('.tl-bar.s-failed').first().waitFor();
    await page.locator('.tl-lane', { hasText: 'colors' }).locator('.tl-bar.s-succeeded').waitFor();
    await page.getByRole('button', { name: '15m' }).click();
    await page.waitForFunction(() => document.querySelectorAll('.tl-axis .tl-tick').length >= 4);
    const bars = await page.locator('.tl-bar').count();
    if (bars < 4) throw new Error(`expected at least 4 runs on the timeline, saw ${bars}`);
    // A bar opens its run.
    await page.locator('.tl-lane', { hasText: 'long' }).locator('.tl-bar.s-killed').click();
    await page.locator('.run-status .badge', { hasText: 'Killed' }).waitFor();
    await page.goBack();
    await page.locator('.tl-lane', { hasText: 'long' }).waitFor();
    await shot('timeline');
  });

  await check('maintenance can be set for a minion', async () => {
    await page.getByRole('link', { name: 'Maintenance' }).click();
    await page.getByText('No machine is in maintenance.').waitFor();
    await page.getByLabel('Minion or target').fill('minion-3');
    await page.getByLabel('Why').fill('Disk replacement, OPS-1234');
    await page.getByRole('button', { name: 'Start maintenance' }).click();
    await page.getByText('1 minion is in maintenance').waitFor();
    await page.locator('td', { hasText: 'Disk replacement, OPS-1234' }).waitFor();
    await shot('maintenance');
  });

  await check('the audit log names the token for run, kill and maintenance', async () => {
    await page.getByRole('link', { name: 'Audit' }).click();
    for (const action of ['run', 'kill', 'maintenance.start']) {
      await page.locator('tr', { has: page.locator('span.tag', { hasText: new RegExp(`^${action.replace('.', '\\.')}$`) }) })
        .filter({ hasText: 'e2e-operator' }).first().waitFor();
    }
    await shot('audit');
  });

  await check('the UTC toggle changes the times shown', async () => {
    await page.goto(`${url}/#/runs`);
    const cell = page.locator('table.grid tbody tr td:nth-child(2)').first();
    await cell.waitFor();
    const before = await cell.textContent();
    await page.locator('#zone-toggle').click();
    await page.waitForFunction((b) => document.querySelector('table.grid tbody tr td:nth-child(2)')?.textContent !== b, before);
    const after = await cell.textContent();
    if (before === after) throw new Error('the zone toggle changed nothing');
    await shot('runs');
  });

  if (problems.length) throw new Error(`the page reported errors:\n${problems.join('\n')}`);
  console.log('ALL STEPS PASSED');
} catch (e) {
  try { await shot('failure'); } catch { /* the browser may be gone */ }
  console.error(`not ok ${step + 1}: ${e.stack || e}`);
  if (problems.length) console.error(problems.join('\n'));
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
