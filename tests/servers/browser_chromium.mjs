// A browser with no person, for BROWSER: real headless Chromium (Debian's /usr/bin/chromium) driven by
// playwright-core through oidc-provider's devInteractions login and consent pages and the device-flow pages.
// Same contract and environment variables as browser_http.py (see its docstring):
//   NCP_TEST_BROWSER_ACTION=approve|deny, NCP_TEST_BROWSER_LOG, NCP_TEST_BROWSER_USER,
//   NCP_TEST_BROWSER_TIMEOUT (seconds), NCP_TEST_CHROMIUM_PATH (default /usr/bin/chromium).
// Usage: node browser_chromium.mjs [--foreground] URL
// Without --foreground it starts a detached copy of itself and exits at once (Python's webbrowser waits for
// $BROWSER to exit). Every request to a non-loopback address is aborted (the dev pages @import web fonts).

import { spawn } from 'node:child_process';
import { appendFileSync, closeSync, openSync } from 'node:fs';
import { isIP } from 'node:net';
import { fileURLToPath } from 'node:url';

const SECRET_PARAMS = new Set(['code', 'access_token', 'id_token', 'refresh_token', 'device_code']);
const CHROMIUM_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

const logPath = process.env.NCP_TEST_BROWSER_LOG;
const action = process.env.NCP_TEST_BROWSER_ACTION ?? 'approve';
const user = process.env.NCP_TEST_BROWSER_USER ?? 'alice';
const timeoutMs = Number(process.env.NCP_TEST_BROWSER_TIMEOUT ?? '30') * 1000;
const executablePath = process.env.NCP_TEST_CHROMIUM_PATH ?? '/usr/bin/chromium';

function log(line) {
  if (logPath) appendFileSync(logPath, `${new Date().toTimeString().slice(0, 8)} ${line}\n`);
}

function isLoopback(url) {
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    return false;
  }
  if (parsed.protocol === 'data:' || parsed.protocol === 'about:') return true; // no network
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return false;
  const host = parsed.hostname.replace(/^\[|\]$/g, '');
  if (host === 'localhost' || host === '::1') return true;
  return isIP(host) === 4 && host.startsWith('127.');
}

function redact(url) {
  try {
    const parsed = new URL(url);
    for (const name of SECRET_PARAMS) if (parsed.searchParams.has(name)) parsed.searchParams.set(name, `<${name}>`);
    return parsed.href;
  } catch {
    return '<unparsable url>';
  }
}

async function login(startUrl) {
  const { chromium } = await import('playwright-core');
  const asOrigin = new URL(startUrl).origin;
  const deadline = Date.now() + timeoutMs;
  const browser = await chromium.launch({
    executablePath, headless: true, chromiumSandbox: false, args: CHROMIUM_FLAGS, timeout: timeoutMs,
  });
  try {
    const context = await browser.newContext();
    await context.route('**/*', (route) => {
      const url = route.request().url();
      if (isLoopback(url)) return route.continue();
      log(`blocked ${redact(url)}`);
      return route.abort('blockedbyclient');
    });
    const page = await context.newPage();
    page.setDefaultTimeout(Math.max(1000, deadline - Date.now()));
    let callback = null;
    page.on('request', (request) => {
      if (request.isNavigationRequest() && new URL(request.url()).origin !== asOrigin && !callback) {
        callback = request.url();
        log(`callback ${request.method()} ${redact(callback)}`);
      }
    });
    page.on('requestfinished', (request) => {
      if (request.url() === callback) callback = `${callback}#delivered`;
    });

    const settle = async (before) => {
      await page.waitForURL((u) => u.href !== before, { waitUntil: 'domcontentloaded' });
    };

    log(`start action=${action} url=${redact(startUrl)}`);
    if (!isLoopback(startUrl)) return [false, `refused non-loopback URL ${redact(startUrl)}`];
    await page.goto(startUrl, { waitUntil: 'domcontentloaded' });
    for (let step = 0; step < 30 && Date.now() < deadline; step += 1) {
      if (callback) {
        await page.waitForLoadState('load').catch(() => {});
        return [true, 'callback delivered'];
      }
      const before = page.url();
      const prompt = await page.$eval('input[name=prompt]', (el) => el.value).catch(() => null);
      if (prompt === 'login' || prompt === 'consent') {
        if (action === 'deny') {
          log(`deny at ${prompt} page`);
          await Promise.all([settle(before), page.click('a[href$="/abort"]')]);
        } else if (prompt === 'login') {
          log('submit login form');
          await page.fill('input[name=login]', user);
          await page.fill('input[name=password]', 'any-password');
          await Promise.all([settle(before), page.click('button[type=submit]')]);
        } else {
          log('submit consent form');
          await Promise.all([settle(before), page.click('button[type=submit]')]);
        }
        continue;
      }
      if (await page.$('form[id="op.deviceConfirmForm"]')) {
        if (action === 'deny') {
          log('deny device confirmation');
          await page.click('button[name=abort]');
          await page.waitForSelector('text=The Sign-in request was interrupted');
          return [true, 'device flow denied'];
        }
        log('confirm device');
        await Promise.all([settle(before), page.click('button[autofocus][form="op.deviceConfirmForm"]')]);
        continue;
      }
      if ((await page.title()).includes('Success')) return [true, 'device flow finished'];
      // An auto-submitting page (device flow's first step, response_mode=form_post) or a redirect in flight.
      const moved = await settle(before).then(() => true, () => false);
      if (!moved && !callback) return [false, `stuck at page ${JSON.stringify(await page.title())}`];
    }
    return [false, callback ? 'callback delivered late' : 'deadline passed'];
  } finally {
    await browser.close();
  }
}

async function main() {
  const args = process.argv.slice(2);
  let foreground = process.env.NCP_TEST_BROWSER_FOREGROUND === '1';
  if (args[0] === '--foreground') {
    foreground = true;
    args.shift();
  }
  if (args.length !== 1) {
    process.stderr.write('usage: browser_chromium.mjs [--foreground] URL\n');
    return 2;
  }
  if (!foreground) {
    const sink = logPath ? openSync(logPath, 'a') : 'ignore';
    spawn(process.execPath, [fileURLToPath(import.meta.url), '--foreground', args[0]], {
      detached: true, stdio: ['ignore', sink, sink],
    }).unref();
    if (typeof sink === 'number') closeSync(sink);
    return 0;
  }
  let result;
  try {
    result = await login(args[0]);
  } catch (err) {
    result = [false, `${err?.name ?? 'Error'}: ${String(err?.message ?? err).split('\n')[0]}`];
  }
  log(`end ok=${result[0] ? 'True' : 'False'} ${result[1]}`);
  return result[0] ? 0 : 1;
}

process.exitCode = await main();
