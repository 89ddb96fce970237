/**
 * The dashboard in real headless Chromium (Debian's `chromium`, driven by puppeteer-core: nothing is
 * downloaded) against a lab: sign in with the token `lab up` printed, 3 nodes, their links and the
 * demo; a power cut of the demo's node shown without a reload (node down, demo elsewhere) within 10 s;
 * a migrate from the page moves the demo; the power cut in the failover-time plot; a phone-sized
 * screen (the vservers' actions on it, no sideways scrolling); a read-only token refused with a
 * message (and 403 from the API). Screenshots go to /tmp/cvserver-dashboard-shots/.
 */
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import type { LabStatus } from '../../src/lab/lab.ts';
import { ROOT } from '../helpers/cli.ts';
import { type DemoPlace, run, TestLab } from '../helpers/lab.ts';

const SHOTS = '/tmp/cvserver-dashboard-shots';

// What the functions run in the page use of the DOM (this project compiles without the DOM's types).
interface PageElement {
  getAttribute(name: string): string | null;
  closest(selector: string): PageElement | null;
  getBoundingClientRect(): { width: number };
  textContent: string | null;
  hidden: boolean;
}
declare const document: {
  querySelector(selector: string): PageElement | null;
  querySelectorAll(selector: string): { length: number };
  getElementById(id: string): PageElement | null;
  documentElement: { scrollWidth: number };
};
const CHROMIUM = '/usr/bin/chromium';

/** The node whose box in the picture holds the demo, or null. */
function demoNodeOnPage(page: Page): Promise<{ node: string | null; status: string | null }> {
  return page.evaluate(() => {
    const v = document.querySelector('g[data-vserver="demo"]');
    return {
      node: v?.closest('g[data-node]')?.getAttribute('data-node') ?? null,
      status: v?.getAttribute('data-status') ?? null,
    };
  });
}

async function signIn(
  browser: Browser,
  url: string,
  token: string,
  width = 1280,
  height = 900,
): Promise<Page> {
  const page = await browser.newPage();
  await page.setViewport({ width, height });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e instanceof Error ? e.message : String(e)));
  await page.goto(url, { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#token', { visible: true });
  await page.type('#token', token);
  await page.click('#login-button');
  await page.waitForSelector('g[data-node]', { timeout: 10_000 });
  assert.deepEqual(errors, [], 'no script errors');
  return page;
}

test('the dashboard: sign in, the cluster live, a power cut, a migrate, a phone, a read-only token', async (t) => {
  mkdirSync(SHOTS, { recursive: true });
  const lab = await TestLab.up(t, { letter: 'n' });
  const ls = JSON.parse(
    (await run(join(ROOT, 'bin', 'cvserver'), ['lab', 'status', '--name', lab.name, '--json'])).stdout,
  ) as LabStatus;
  assert.ok(ls.dashboard, 'lab status --json shows the dashboard');
  assert.match(ls.dashboard.url, /^https:\/\/10\.\d+\.0\.11:9443\/$/);
  assert.match(ls.dashboard.token, /^cvs_/);

  const demo = await lab.demoHealthy(60_000);
  // The page is served by a node that will survive the power cut.
  const viewer = lab.nodes.find((n) => n !== demo.node)!;
  const url = `https://${lab.nodeAddress(viewer)}:9443/`;
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    // The lab's certificates are signed by the lab's own CA, which this browser profile does not know.
    acceptInsecureCerts: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  t.after(() => browser.close());
  try {
    await scenario(t, lab, browser, url, ls.dashboard.token, demo);
  } catch (err) {
    // A failure leaves a picture of every open page.
    for (const [i, p] of (await browser.pages()).entries())
      await p
        .screenshot({ path: join(SHOTS, `zz-failed-page-${i}.png`), fullPage: true })
        .catch(() => undefined);
    throw err;
  }
});

async function scenario(
  t: TestContext,
  lab: TestLab,
  browser: Browser,
  url: string,
  adminToken: string,
  demo: DemoPlace,
): Promise<void> {
  const viewer = lab.nodes.find((n) => new URL(url).hostname === lab.nodeAddress(n))!;
  // Sign-in page, then the cluster: 3 nodes up, 3 links up with an RTT, the demo where status says.
  const login = await browser.newPage();
  await login.setViewport({ width: 1280, height: 900 });
  await login.goto(url);
  await login.waitForSelector('#token', { visible: true });
  await login.screenshot({ path: join(SHOTS, '01-login.png') });
  await login.close();
  const page = await signIn(browser, url, adminToken);
  await page.waitForFunction(
    () =>
      document.querySelectorAll('g[data-node][data-state="up"]').length === 3 &&
      document.querySelectorAll('g[data-link][data-state="up"]').length === 3 &&
      document.querySelector('g[data-vserver="demo"][data-status="healthy"]') !== null &&
      document.querySelectorAll('#events li').length > 0,
    { timeout: 15_000 },
  );
  assert.equal((await demoNodeOnPage(page)).node, demo.node);
  const linkText = await page.$eval('g[data-link]', (g) => g.textContent ?? '');
  assert.match(linkText, /\d+\.\d+ ms/, 'a link shows its RTT');
  const header = await page.$eval('header', (h) => h.textContent ?? '');
  assert.match(header, /quorate/);
  assert.match(header, /manager n\d/);
  await page.screenshot({ path: join(SHOTS, '02-cluster.png'), fullPage: true });

  // Power cut of the demo's node: the page shows it without a reload.
  const killedAt = Date.now();
  await lab.kill(demo.node);
  await page.waitForFunction(
    (dead: string) => {
      const node = document.querySelector(`g[data-node="${dead}"]`);
      const v = document.querySelector('g[data-vserver="demo"]');
      const on = v?.closest('g[data-node]')?.getAttribute('data-node');
      return (
        node?.getAttribute('data-state') === 'down' &&
        on !== undefined &&
        on !== dead &&
        ['running', 'healthy'].includes(v?.getAttribute('data-status') ?? '')
      );
    },
    { timeout: 10_000, polling: 100 },
    demo.node,
  );
  const shownAfter = Date.now() - killedAt;
  assert.ok(shownAfter <= 10_000, `shown after ${shownAfter} ms`);
  const moved = await demoNodeOnPage(page);
  t.diagnostic(
    `node ${demo.node} down and the demo on ${moved.node} shown ${shownAfter} ms after the power cut`,
  );
  await page.screenshot({ path: join(SHOTS, '03-after-power-cut.png'), fullPage: true });

  // A migrate from the page, confirmed, moves the demo to the other live node.
  await lab.demoHealthy(60_000, demo.node);
  const target = lab.nodes.find((n) => n !== demo.node && n !== moved.node)!;
  await page.waitForSelector('g[data-vserver="demo"][data-status="healthy"]');
  await page.select('select[data-migrate-target="demo"]', target);
  await page.click('button[data-action="migrate"][data-vserver="demo"]');
  await page.waitForSelector('#confirm[open]');
  const question = await page.$eval('#confirm-text', (p) => p.textContent ?? '');
  assert.match(question, new RegExp(`Migrate demo to ${target}`));
  await page.screenshot({ path: join(SHOTS, '04-confirm-migrate.png') });
  await page.click('#confirm-ok');
  await page.waitForFunction(
    (to: string) => {
      const v = document.querySelector('g[data-vserver="demo"]');
      return (
        v?.closest('g[data-node]')?.getAttribute('data-node') === to &&
        v.getAttribute('data-status') === 'healthy'
      );
    },
    { timeout: 90_000, polling: 250 },
    target,
  );
  assert.equal((await lab.whereIsDemo()).node, target);
  // The log arrives by its own poll (each node flushes its events on its own loop): wait for the line.
  await page
    .waitForFunction(
      () =>
        /migrate to .* requested by token lab-admin/.test(
          document.querySelector('#events')?.textContent ?? '',
        ),
      { timeout: 10_000, polling: 250 },
    )
    .catch(async () => {
      const log = await page.$eval('#events', (o) => o.textContent ?? '');
      assert.fail(`no "migrate to ... requested by token lab-admin" in the page's log:\n${log}`);
    });
  await page.screenshot({ path: join(SHOTS, '05-migrated.png'), fullPage: true });
  // The power cut is a bar of the failover-time plot (from the events), with its time.
  const bar = await page.waitForSelector(`#failovers g[data-failover^="demo@"] title`, { timeout: 10_000 });
  const barText = (await bar?.evaluate((x) => x.textContent ?? '')) ?? '';
  assert.match(barText, new RegExp(`demo: ${demo.node} → \\S+ in [0-9.]+ s`));
  t.diagnostic(`failover plot: ${barText}`);
  // Backup now: the lab's demo has no backup configuration, so its button is there but disabled.
  const backupButton = await page.$eval('button[data-action="backup"][data-vserver="demo"]', (b) => ({
    disabled: b.hasAttribute('disabled'),
    title: b.getAttribute('title'),
  }));
  assert.deepEqual(backupButton, { disabled: true, title: 'demo has no backup configuration' });

  // A phone: everything on the page, nothing wider than the screen.
  const phone = await signIn(browser, url, adminToken, 390, 844);
  await phone.waitForSelector('g[data-vserver="demo"]');
  const widths = await phone.evaluate(() => ({
    doc: document.documentElement.scrollWidth,
    picture: document.getElementById('picture')?.getBoundingClientRect().width ?? 0,
  }));
  assert.ok(widths.doc <= 390, `the page is ${widths.doc} px wide on a 390 px screen`);
  assert.ok(widths.picture > 300, 'the picture uses the width');
  // The vservers' actions are within the screen, without sideways scrolling (rows stack into cards).
  await phone.$eval('[data-vserver-row="demo"]', (e) => e.scrollIntoView({ block: 'center' }));
  const actions = await phone.$$eval('[data-vserver-row="demo"] td.actions > *', (xs) =>
    xs.map((x) => {
      const r = x.getBoundingClientRect();
      const wrap = x.closest('.table-wrap');
      return {
        what: x.getAttribute('data-action') ?? x.tagName,
        left: r.left,
        right: r.right,
        top: r.top,
        bottom: r.bottom,
        scrolls: wrap ? wrap.scrollWidth > wrap.clientWidth : false,
      };
    }),
  );
  assert.deepEqual(
    actions.map((a) => a.what),
    ['SELECT', 'migrate', 'clear', 'backup'],
  );
  for (const a of actions) {
    assert.ok(a.left >= 0 && a.right <= 390, `${a.what} at x ${a.left}-${a.right} on a 390 px screen`);
    assert.ok(a.top >= 0 && a.bottom <= 844, `${a.what} at y ${a.top}-${a.bottom}: on the screen`);
    assert.equal(a.scrolls, false, 'the vservers do not scroll sideways');
  }
  await phone.screenshot({ path: join(SHOTS, '06b-phone-vservers.png') });
  await phone.$eval('body', (b) => b.scrollIntoView());
  await phone.screenshot({ path: join(SHOTS, '06-phone-390x844.png') });
  await phone.screenshot({ path: join(SHOTS, '07-phone-full.png'), fullPage: true });
  await phone.close();

  // A read-only token: the page refuses the action with the API's message; the API says 403.
  const r = await lab.exec(viewer, ['token', 'create', 'viewer', '--scope', 'read', '--json'], 90_000);
  assert.equal(r.status, 0, r.stderr);
  const readToken = (JSON.parse(r.stdout) as { token: string }).token;
  const ro = await signIn(browser, url, readToken);
  await ro.click('#maintenance-toggle');
  await ro.waitForSelector('#confirm[open]');
  await ro.click('#confirm-ok');
  await ro.waitForFunction(
    () => {
      const m = document.getElementById('message');
      return m && !m.hidden && /403/.test(m.textContent ?? '');
    },
    { timeout: 5000 },
  );
  const msg = await ro.$eval('#message', (m) => m.textContent ?? '');
  assert.match(msg, /scope read: this needs admin/);
  await ro.screenshot({ path: join(SHOTS, '08-read-only-refused.png') });
  const api = await ro.evaluate(async (token: string) => {
    const res = await fetch('/api/maintenance', {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: '{"on":true}',
    });
    return { status: res.status, body: (await res.json()) as { field?: string } };
  }, readToken);
  assert.equal(api.status, 403);
  assert.equal(api.body.field, 'scope');
  assert.equal((await lab.status(viewer)).maintenance, null, 'nothing changed');
}
