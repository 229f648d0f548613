/**
 * The web console in a real browser: Debian's chromium driven by playwright-core (no browser download)
 * against a real prismd (oci runtime). Logs in, sees a sandbox made through the API, types in its
 * terminal (the effect checked through the API), uploads a file, sees metrics, creates and deletes a
 * sandbox, and is logged out when its token is revoked. Screenshots go to .test-output/console/.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { bearerProtocol, PTY_PROTOCOL } from '../../src/core/socket-protocols.js';
import { Prism, type SandboxHandle } from '../../src/sdk/index.js';
import { REPO_ROOT, integrationSkipReason, startPrismd, type Prismd } from './prismd-harness.js';

const skip = integrationSkipReason();
const CHROMIUM = process.env.PRISM_TEST_CHROMIUM ?? '/usr/bin/chromium';
const SHOTS = join(REPO_ROOT, '.test-output', 'console');

describe.skipIf(!!skip)('web console in chromium', () => {
  let d: Prismd;
  let admin: Prism;
  let browser: Browser;
  let page: Page;
  let sb: SandboxHandle;
  /** A token of its own, so that revoking it at the end logs the console out and nothing else. */
  let consoleToken: { id: string; token: string };
  const problems: string[] = [];

  const shot = (name: string) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium (scripts/setup.sh --test does)`);
    mkdirSync(SHOTS, { recursive: true });
    d = await startPrismd({ extraArgs: ['--metrics-interval', '1'] });
    admin = new Prism({ url: d.url, token: d.token });
    consoleToken = await admin.tokens.create('console-test');
    sb = await admin.sandboxes.create({ name: 'from-the-api' });
    // Root has no user namespace sandbox for chromium here; the page is the only thing it loads.
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'], headless: true });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    // Anything the Content-Security-Policy refused, and any script error, fails the test at the end.
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await d?.dispose();
  });

  it('serves the page without a token, with a strict Content-Security-Policy; the API still needs one', async () => {
    const res = await fetch(`${d.url}/`);
    expect(res.status).toBe(200);
    const csp = res.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).not.toContain('unsafe');
    const nonce = /'nonce-([^']+)'/.exec(csp)?.[1];
    expect(nonce).toBeTruthy();
    const html = await res.text();
    expect(html).toContain(`content="${nonce}"`);
    // A fresh nonce per response.
    const again = await fetch(`${d.url}/`);
    expect(again.headers.get('content-security-policy')).not.toBe(csp);
    const asset = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    expect(asset).toBeTruthy();
    expect((await fetch(`${d.url}${asset}`)).status).toBe(200);
    expect((await fetch(`${d.url}/assets/nope.js`)).status).toBe(404);
    expect((await fetch(`${d.url}/api/v1/sandboxes`)).status).toBe(401);
  });

  it('takes a terminal token as a WebSocket subprotocol, and refuses a wrong one', async () => {
    const open = (token: string) =>
      new Promise<number | string>((resolve, reject) => {
        const ws = new WebSocket(`ws://${d.api}/api/v1/sandboxes/${sb.id}/pty`, [PTY_PROTOCOL, bearerProtocol(token)]);
        ws.once('open', () => {
          resolve(ws.protocol);
          ws.close();
        });
        ws.once('unexpected-response', (req, res) => {
          req.destroy();
          resolve(res.statusCode ?? 0);
        });
        ws.once('error', reject);
      });
    expect(await open(consoleToken.token)).toBe(PTY_PROTOCOL);
    expect(await open('prism_nope_nope')).toBe(401);
  });

  it('refuses a wrong token with a clear message and no stack trace', async () => {
    await page.goto(`${d.url}/`);
    await page.getByLabel('API token').fill('prism_wrong_token');
    await page.getByRole('button', { name: 'Log in' }).click();
    const alert = page.getByRole('alert');
    await alert.waitFor();
    expect(await alert.textContent()).toContain('not accepted');
    expect(await page.locator('body').textContent()).not.toMatch(/\bat \S+:\d+/);
    await shot('01-wrong-token');
  });

  it('logs in with the keyboard alone and shows the sandbox made through the API, live', async () => {
    await page.getByLabel('API token').fill('');
    await page.getByLabel('API token').focus();
    await page.keyboard.type(consoleToken.token);
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: /Sandboxes/ }).waitFor();
    await page.locator(`tr[data-sandbox="${sb.id}"]`).waitFor();
    // The token stays in this tab's sessionStorage, never in the URL.
    expect(await page.evaluate(() => Object.values(sessionStorage))).toContain(consoleToken.token);
    expect(page.url()).not.toContain(consoleToken.token);
    await page.getByText('live', { exact: true }).waitFor();
    // A sandbox created now through the API appears without a reload (GET /events).
    const later = await admin.sandboxes.create({ name: 'appears-live' });
    await page.locator(`tr[data-sandbox="${later.id}"]`).waitFor({ timeout: 15_000 });
    await later.delete();
    await page.locator(`tr[data-sandbox="${later.id}"]`).waitFor({ state: 'detached', timeout: 15_000 });
    await shot('02-sandboxes');
  });

  it('types a command in the terminal, whose effect the API sees', async () => {
    await page.getByRole('link', { name: 'from-the-api' }).click();
    await page.locator('[data-terminal-state="connected"]').waitFor({ timeout: 20_000 });
    await page.locator('.term-host').click();
    await page.keyboard.type('echo typed-in-the-browser > /tmp/from-console.txt; echo done-$((6*7))\n');
    await page.locator('.term-host').getByText('done-42').waitFor({ timeout: 15_000 });
    const r = await sb.exec(['cat', '/tmp/from-console.txt']);
    expect(r.text()).toBe('typed-in-the-browser\n');
    await shot('03-terminal');
  });

  it('uploads a file and lists it', async () => {
    await page.getByRole('tab', { name: 'Files' }).click();
    await page.getByLabel('Directory').fill('/tmp');
    await page.getByRole('button', { name: 'Open' }).click();
    await page.getByLabel('Upload file').setInputFiles({ name: 'upload.txt', mimeType: 'text/plain', buffer: Buffer.from('uploaded from chromium\n') });
    await page.getByRole('cell', { name: 'upload.txt', exact: true }).waitFor({ timeout: 15_000 });
    expect(await sb.files.readText('/tmp/upload.txt')).toBe('uploaded from chromium\n');
    await shot('04-files');
  });

  it('shows metrics', async () => {
    await page.getByRole('tab', { name: 'Metrics' }).click();
    const mem = page.locator('[data-metric="memory"]');
    await mem.waitFor({ timeout: 20_000 });
    expect(await mem.textContent()).toMatch(/\d.* of \d/);
    await page.locator('svg[role="img"] path.line').first().waitFor();
    await shot('05-metrics');
  });

  it('runs a command and shows it in the exec log', async () => {
    await page.getByRole('tab', { name: 'Exec logs' }).click();
    await page.getByLabel('Command').fill('echo from-the-log-tab');
    await page.getByRole('button', { name: 'Run' }).click();
    await page.getByLabel('Result').getByText('from-the-log-tab').waitFor();
    await page.locator('.log code', { hasText: 'from-the-log-tab' }).first().waitFor();
  });

  it('creates and deletes a sandbox from the form', async () => {
    await page.getByRole('link', { name: 'Sandboxes', exact: true }).click();
    await page.getByText('Create a sandbox').click();
    await page.getByLabel('Image').fill(sb.info.image);
    await page.getByLabel('Name (optional)').fill('made-in-the-console');
    await page.getByLabel('Memory (MiB)').fill('128');
    await page.getByRole('button', { name: 'Create', exact: true }).click();
    const made = await waitUntil(async () => (await admin.sandboxes.list()).find((s) => s.name === 'made-in-the-console'));
    expect(made.info.memoryMb).toBe(128);
    await page.locator(`tr[data-sandbox="${made.id}"]`).getByText('running').waitFor({ timeout: 30_000 });
    page.once('dialog', (dialog) => void dialog.accept());
    await page.getByRole('button', { name: 'Delete made-in-the-console' }).click();
    await page.locator(`tr[data-sandbox="${made.id}"]`).waitFor({ state: 'detached', timeout: 30_000 });
    expect((await admin.sandboxes.list()).map((s) => s.name)).not.toContain('made-in-the-console');
  });

  it('shows nodes, images and volumes', async () => {
    await page.getByRole('link', { name: 'Nodes' }).click();
    await page.getByRole('cell', { name: 'alive' }).waitFor();
    await shot('06-nodes');
    await page.getByRole('link', { name: 'Images' }).click();
    await page.locator('td.mono', { hasText: 'sha256:' }).first().waitFor();
    await page.getByRole('link', { name: 'Volumes' }).click();
    await page.getByRole('heading', { name: 'Volumes' }).waitFor();
  });

  it('creates a shared volume on a chosen node from the form, and deletes it', async () => {
    await page.getByRole('link', { name: 'Volumes' }).click();
    const [self] = await admin.nodes.list();
    await page.getByLabel('Volume name').fill('made-in-the-console');
    await page.getByLabel('Size (MiB)').fill('16');
    await page.getByLabel('Node').selectOption(self!.id);
    await page.getByLabel('Shared read-write (containers)').check();
    await page.getByRole('button', { name: 'Create volume' }).click();
    const made = await waitUntil(async () => (await admin.volumes.list()).find((v) => v.name === 'made-in-the-console'));
    expect(made).toMatchObject({ sizeMb: 16, node: self!.id, multiAttach: true });
    page.once('dialog', (dialog) => void dialog.accept());
    await page.getByRole('button', { name: 'Delete volume made-in-the-console' }).click();
    await waitUntil(async () => ((await admin.volumes.list()).some((v) => v.name === 'made-in-the-console') ? undefined : true));
  });

  it('logs out when its token is revoked', async () => {
    await page.getByRole('link', { name: 'Nodes' }).click(); // refreshes every 5 s
    await admin.tokens.revoke(consoleToken.id);
    await page.getByLabel('API token').waitFor({ timeout: 20_000 });
    expect(await page.getByRole('status').textContent()).toContain('no longer accepted');
    expect(await page.evaluate(() => Object.values(sessionStorage))).not.toContain(consoleToken.token);
    await shot('07-revoked');
  });

  it('labels every control', async () => {
    await page.getByLabel('API token').waitFor();
    const pages = ['#/sandboxes', '#/nodes', '#/images', '#/volumes', `#/sandboxes/${sb.id}/files`, `#/sandboxes/${sb.id}/logs`, `#/sandboxes/${sb.id}/processes`];
    // Logged out by now: log in again (a fresh token) to walk the pages.
    const again = await admin.tokens.create('console-test-2');
    await page.getByLabel('API token').fill(again.token);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('button', { name: 'Log out' }).waitFor();
    for (const hash of pages) {
      await page.evaluate((h) => (location.hash = h), hash);
      await page.waitForTimeout(300);
      const unlabelled = await page.evaluate(() =>
        [...document.querySelectorAll('input, select, textarea, button')]
          .filter((el) => {
            const labels = (el as HTMLInputElement).labels;
            return !(labels && labels.length > 0) && !el.getAttribute('aria-label') && !(el.textContent ?? '').trim();
          })
          .map((el) => el.outerHTML.slice(0, 120)),
      );
      expect(unlabelled, hash).toEqual([]);
    }
    await admin.tokens.revoke(again.id);
  });

  it('met no script error and no Content-Security-Policy refusal', () => {
    // The wrong token's 401 is logged by chromium as a failed resource; nothing else may be.
    expect(problems.filter((p) => !/status of 401/.test(p))).toEqual([]);
  });
});

async function waitUntil<T>(f: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 200));
  }
}
