// The operator UI in a real browser: Debian's headless Chromium driven by
// playwright-core. Starts withcache-server ($WITHCACHE_SERVER_BIN) and an
// origin (python3 -m http.server), both on 127.0.0.1 and stopped by PID.
//
//   WITHCACHE_SERVER_BIN=build/test/apps/server/withcache-server node --test tests/browser/ui.test.mjs
//   WITHCACHE_SCREENSHOT=docs/operator-ui.png  also saves a screenshot of the dashboard there.
// (npm ci --prefix tests/browser installs playwright-core; scripts/setup does it.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { closeSync, mkdtempSync, mkdirSync, openSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const PASSWORD = 'browser-test-password';
const DEADLINE_MS = 60_000;

// Starts a child with its output in `log` and resolves the port it reports there (`pattern`'s
// first group): servers start on port 0, so no two tests race for a port.
async function startLogged(command, args, log, pattern, options = {}) {
  const out = openSync(log, 'a');
  const child = spawn(command, args, { ...options, stdio: ['ignore', out, out] });
  closeSync(out);
  const until = Date.now() + DEADLINE_MS;
  while (Date.now() < until) {
    const match = readFileSync(log, 'utf8').match(pattern);
    if (match) return { child, port: Number(match[1]) };
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  child.kill('SIGKILL');
  throw new Error(`${command} reported no port in ${log}`);
}

async function waitFor(url) {
  const until = Date.now() + DEADLINE_MS;
  while (Date.now() < until) {
    try {
      const response = await fetch(url);
      if (response.ok) return;
    } catch { /* not listening yet */ }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${url} did not answer in time`);
}

function stop(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.once('exit', () => { clearTimeout(timer); resolve(); });
    child.kill('SIGTERM');
  });
}

test('operator UI: log in, add, watch it complete, delete, dismiss, log out (everywhere)', async () => {
  const binary = process.env.WITHCACHE_SERVER_BIN;
  assert.ok(binary, 'set WITHCACHE_SERVER_BIN to withcache-server');
  const work = mkdtempSync(join(tmpdir(), 'withcache-browser-'));
  const children = [];
  let browser;
  try {
    mkdirSync(join(work, 'www'));
    writeFileSync(join(work, 'www', 'driver-550.run'), Buffer.alloc(8 * 1024 * 1024, 7));
    const originRun = await startLogged('python3', ['-u', '-m', 'http.server', '0', '--bind', '127.0.0.1',
      '--directory', join(work, 'www')], join(work, 'origin.log'), /Serving HTTP on \S+ port (\d+)/);
    children.push(originRun.child);
    const origin = `http://127.0.0.1:${originRun.port}/driver-550.run`;
    await waitFor(origin);

    // A hostile origin: pages whose script, if it ever ran with the UI's origin, would queue a fill
    // through the operator's session. It asks for them inline, so the browser would render them.
    const hostile = createServer((req, res) => {
      const script = "fetch('/api/v1/downloads',{method:'POST',headers:{'Content-Type':'application/json'}," +
        "body:JSON.stringify({url:'http://127.0.0.1:9/pwned.bin'})}).then(r=>{document.title='reached '+r.status})";
      const pages = {
        '/evil.html': ['text/html', `<html><head><title>evil</title></head><body><script>${script}</script></body></html>`],
        '/evil.svg': ['image/svg+xml', `<svg xmlns="http://www.w3.org/2000/svg"><script>${script}</script></svg>`],
      };
      const page = pages[req.url];
      if (!page) { res.writeHead(404); res.end(); return; }
      res.writeHead(200, { 'Content-Type': page[0], 'Content-Disposition': 'inline' });
      res.end(page[1]);
    });
    await new Promise((resolve) => hostile.listen(0, '127.0.0.1', resolve));
    children.push({ exitCode: null, signalCode: null, kill: () => hostile.close(), once: (e, f) => hostile.once('close', f) });
    const hostileBase = `http://127.0.0.1:${hostile.address().port}`;

    const serverRun = await startLogged(binary, ['--host', '127.0.0.1', '--port', '0', '--data-dir',
      join(work, 'data'), '--allow-private', '127.0.0.1', '--min-free', '0', '--curate', '--cache-html'], join(work, 'server.log'),
    /listening on http:\/\/127\.0\.0\.1:(\d+)/, {
      env: { ...process.env, WITHCACHE_ADMIN_PASSWORD: PASSWORD, WITHCACHE_SESSION_SECRET: '',
        WITHCACHE_API_TOKEN: 'browser-test-token' },
    });
    children.push(serverRun.child);
    await waitFor(`http://127.0.0.1:${serverRun.port}/healthz`);
    // A LAN name, not localhost: the page is not a secure context (no navigator.clipboard), as an
    // operator's browser sees http://cache.lab:3000. The name resolves to loopback inside Chromium only.
    const base = `http://cache.lab:${serverRun.port}`;
    const direct = `http://127.0.0.1:${serverRun.port}`; // what this test process itself asks

    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
        '--host-resolver-rules=MAP cache.lab 127.0.0.1'],
    });
    const page = await browser.newPage();
    page.setDefaultTimeout(DEADLINE_MS);
    page.on('dialog', (dialog) => dialog.accept()); // "Delete …?" confirmations
    // The UI runs under its CSP: no violation, no error, on any page.
    const problems = [];
    page.on('console', (message) => {
      // The expected error statuses: the wrong password below answers 401, the over-long URL 414.
      if (message.type() === 'error' && !/status of (401|414)/.test(message.text())) problems.push(message.text());
    });
    page.on('pageerror', (error) => problems.push(String(error)));

    // Unauthenticated pages send us to the login form; a wrong password says so.
    await page.goto(`${base}/ui/artifacts`);
    assert.match(page.url(), /\/ui\/login$/);
    await page.fill('input[name=password]', 'wrong');
    await page.click('button[type=submit]');
    await page.getByText('Wrong password.').waitFor();
    await page.fill('input[name=password]', PASSWORD);
    await page.click('button[type=submit]');
    await page.getByRole('heading', { name: 'Dashboard' }).waitFor();

    // Add from URI (HTMX posts the form and swaps in the answer).
    await page.goto(`${base}/ui/add`);
    await page.fill('input[name=url]', origin);
    await page.fill('textarea[name=header]', 'X-Lab: browser-test-secret-value');
    await page.click('#add button[type=submit]');
    await page.getByText('Queued.').waitFor();

    // An origin URL over 8 KiB: the server answers 414 and the form shows why (nothing is queued).
    await page.goto(`${base}/ui/add`);
    await page.fill('input[name=url]', `${origin}?pad=${'x'.repeat(9000)}`);
    await page.click('#add button[type=submit]');
    await page.getByText(/URL too long: \d+ bytes, at most 8192 are accepted/).waitFor();

    // The Downloads page refreshes itself until the fill has completed.
    await page.goto(`${base}/ui/downloads`);
    await page.locator('tr[data-status=completed]').waitFor();
    const progress = page.locator('tr[data-status=completed] progress');
    assert.equal(await progress.getAttribute('value'), await progress.getAttribute('max'));
    assert.ok(!(await page.content()).includes('browser-test-secret-value'), 'header values are never shown');
    // It pages and filters like the other tables; what the operator types survives the refresh.
    await page.getByText('1–1 of 1').waitFor();
    await page.fill('input[name=q]', 'driver-550');
    await page.click('form[role=search] button[type=submit]');
    await page.locator('tr[data-status=completed]').waitFor();
    assert.match(page.url(), /\/ui\/downloads\?q=driver-550$/);
    await page.evaluate(() => new Promise((resolve) => {
      document.getElementById('downloads').addEventListener('htmx:afterSwap', resolve, { once: true });
    }));
    assert.equal(await page.inputValue('input[name=q]'), 'driver-550');
    await page.goto(`${base}/ui/downloads?q=no-such-download`);
    await page.getByText('No downloads.').waitFor();

    if (process.env.WITHCACHE_SCREENSHOT) {
      await page.setViewportSize({ width: 1200, height: 640 });
      await page.goto(`${base}/`);
      await page.getByText('8.0 MiB').first().waitFor();
      await page.screenshot({ path: process.env.WITHCACHE_SCREENSHOT });
    }

    // The artifact is listed with its SHA-256; Copy puts it on the clipboard even on a LAN name.
    await page.goto(`${base}/ui/artifacts`);
    await page.getByText(origin).waitFor();
    assert.equal(await page.evaluate(() => window.isSecureContext), false);
    const sha = await page.locator('button[data-copy]').getAttribute('data-copy');
    assert.match(sha, /^[0-9a-f]{64}$/);
    await page.getByRole('button', { name: 'Copy' }).click();
    await page.getByRole('button', { name: 'Copied' }).waitFor();
    await page.fill('input[name=q]', '');
    await page.focus('input[name=q]');
    await page.keyboard.press('Control+V');
    assert.equal(await page.inputValue('input[name=q]'), sha);
    await page.fill('input[name=q]', '');

    // Delete (with confirmation) removes it.
    await page.getByRole('button', { name: 'Delete' }).click();
    await page.getByText('Nothing cached yet.').waitFor();

    // A miss appears in Misses; Dismiss removes it.
    const missing = `http://127.0.0.1:${originRun.port}/never-fetched.iso`;
    const token = Buffer.from(missing).toString('base64url');
    assert.equal((await fetch(`${direct}/b/${token}/never-fetched.iso`)).status, 404);
    await page.goto(`${base}/ui/misses`);
    await page.getByText(missing).waitFor();
    // What the operator types survives the once-a-second refresh of the list.
    await page.fill('input[name=q]', 'never-fe');
    await page.evaluate(() => new Promise((resolve) => {
      document.getElementById('misses').addEventListener('htmx:afterSwap', resolve, { once: true });
    }));
    assert.equal(await page.inputValue('input[name=q]'), 'never-fe');
    await page.getByRole('button', { name: 'Dismiss' }).click();
    await page.getByText('No misses.').waitFor();

    // Cached pages opened by the logged-in operator cannot act as the UI: the blob's CSP sandboxes
    // them (no script runs), so nothing reaches /api/v1/*.
    const api = (path, init = {}) => fetch(`${direct}${path}`, { ...init,
      headers: { ...(init.headers || {}), Authorization: 'Bearer browser-test-token' } });
    for (const name of ['evil.html', 'evil.svg']) {
      const queued = await api('/api/v1/downloads', { method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ url: `${hostileBase}/${name}` }) });
      assert.equal(queued.status, 202);
      const blob = `${base}/b/${Buffer.from(`${hostileBase}/${name}`).toString('base64url')}/${name}`;
      const until = Date.now() + DEADLINE_MS;
      while ((await fetch(blob.replace(base, direct), { method: 'HEAD' })).status !== 200) {
        assert.ok(Date.now() < until, `${name} was not cached in time`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const response = await page.goto(blob);
      assert.equal(response.headers()['content-security-policy'], "sandbox; default-src 'none'");
      // Give a script every chance to run (the page has loaded), then look for its effects.
      await page.waitForLoadState('load');
      assert.ok(!(await page.title()).startsWith('reached'), `${name}: its script ran`);
    }
    const jobs = await (await api('/api/v1/downloads?q=pwned')).json();
    assert.equal(jobs.total, 0, 'a cached page queued a fill as the operator');
    // The sandbox's script blocks are the expected console messages of that step, not UI problems.
    for (let i = problems.length - 1; i >= 0; --i) {
      if (/sandboxed|Blocked script execution|Content Security Policy/.test(problems[i]) &&
          /evil|blob|sandbox/i.test(problems[i])) problems.splice(i, 1);
    }
    await page.goto(`${base}/`);

    // Log out everywhere: a second browser's session ends too, not only this one's.
    const other = await browser.newContext();
    const otherPage = await other.newPage();
    otherPage.setDefaultTimeout(DEADLINE_MS);
    otherPage.on('pageerror', (error) => problems.push(String(error)));
    await otherPage.goto(`${base}/ui/login`);
    await otherPage.fill('input[name=password]', PASSWORD);
    await otherPage.click('button[type=submit]');
    await otherPage.getByRole('heading', { name: 'Dashboard' }).waitFor();
    await page.getByRole('button', { name: 'Log out everywhere' }).click();
    await page.locator('input[name=password]').waitFor();
    await otherPage.goto(`${base}/ui/events`);
    assert.match(otherPage.url(), /\/ui\/login$/);
    await other.close();

    // Log out: the session is gone.
    await page.fill('input[name=password]', PASSWORD);
    await page.click('button[type=submit]');
    await page.getByRole('heading', { name: 'Dashboard' }).waitFor();
    await page.getByRole('button', { name: 'Log out', exact: true }).click();
    await page.locator('input[name=password]').waitFor();
    await page.goto(`${base}/ui/events`);
    assert.match(page.url(), /\/ui\/login$/);

    // Every UI response carries the CSP and framing headers, and no page broke them.
    const headers = (await fetch(`${direct}/ui/login`)).headers;
    assert.equal(headers.get('content-security-policy'),
      "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
    assert.equal(headers.get('x-frame-options'), 'DENY');
    assert.deepEqual(problems, []);
  } finally {
    if (browser) await browser.close();
    for (const child of children) await stop(child);
    rmSync(work, { recursive: true, force: true });
  }
});
