// Checks the operator's public directory page as a citizen's browser sees it: Debian's
// Chromium driven by playwright-core, axe-core for WCAG 2.1 AA, the keyboard, the search.
//
//   VERBUND_NODE_MODULES=<folder with playwright-core and axe-core> \
//     node check.mjs <page URL> <screenshot.png> <expected.json>
//
// expected.json: {"all": [titles], "search": {"query": "...", "titles": [titles]},
//                 "nothing": "<a query that finds nothing>"}
//
// Prints a JSON summary on stdout; exits 1 with the reasons on stderr when a check fails, 2
// when the check cannot run at all (no modules, no Chromium).

import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

const WCAG_21_AA = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'];
const CHROMIUM = process.env.VERBUND_CHROMIUM || '/usr/bin/chromium';
const TIMEOUT_MS = 30_000;

function die(message) {
  console.error(`check.mjs: ${message}`);
  process.exit(2);
}

const [url, screenshot, expectedFile] = process.argv.slice(2);
if (!url || !screenshot || !expectedFile) {
  die('usage: node check.mjs <page URL> <screenshot.png> <expected.json>');
}
const expected = JSON.parse(fs.readFileSync(expectedFile, 'utf8'));

// ES modules ignore NODE_PATH: load the packages from the folder the caller names.
const modules = process.env.VERBUND_NODE_MODULES;
if (!modules || !fs.existsSync(path.join(modules, 'playwright-core'))) {
  die(`VERBUND_NODE_MODULES (${modules ?? 'unset'}) must name a node_modules folder holding playwright-core and axe-core (npm ci in tests/directory)`);
}
const require = createRequire(path.join(path.resolve(modules), '..', 'loader.cjs'));
const { chromium } = require('playwright-core');
const axeSource = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const playwrightVersion = require('playwright-core/package.json').version;

const failures = [];
function expect(condition, message) {
  if (!condition) failures.push(message);
  return condition;
}

function sameSet(actual, wanted) {
  const a = [...actual].sort();
  const b = [...wanted].sort();
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** What the page shows: the number it states, the titles of its articles, the query kept. */
async function shown(page) {
  return page.evaluate(() => {
    const count = document.querySelector('main p.count')?.textContent ?? '';
    const titles = [...document.querySelectorAll('main ul.services > li > article h2')].map((h2) => {
      const copy = h2.cloneNode(true);
      copy.querySelectorAll('.vh').forEach((e) => e.remove());
      return copy.textContent.trim();
    });
    return {
      stated: Number((count.match(/^\s*(\d+) Dienste? gefunden/) ?? [])[1] ?? NaN),
      titles,
      query: document.querySelector('#q')?.value ?? null,
      empty: document.querySelector('main .empty')?.textContent.replace(/\s+/g, ' ').trim() ?? null,
      scripts: document.scripts.length,
      h1: document.querySelectorAll('h1').length,
      lang: document.documentElement.lang,
    };
  });
}

/** axe-core on the page as it is, WCAG 2.1 A and AA rules only. */
async function axe(page, name) {
  // Evaluated through the DevTools protocol, which the page's CSP does not govern: the page
  // itself stays under its real policy.
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) {
    await page.evaluate(axeSource);
  }
  const result = await page.evaluate(
    (tags) => window.axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] }),
    WCAG_21_AA,
  );
  for (const v of result.violations) {
    const nodes = v.nodes.map((n) => n.target.join(' ')).slice(0, 5).join(', ');
    failures.push(`axe on the ${name} page: ${v.id} (${v.impact}): ${v.help} [${nodes}] ${v.helpUrl}`);
  }
  return {
    violations: result.violations.length,
    passes: result.passes.length,
    incomplete: result.incomplete.length,
    rules: result.violations.map((v) => v.id),
    incompleteRules: result.incomplete.map((v) => v.id),
  };
}

/** Submits the search form from the keyboard, as a person would: type, then Enter. */
async function search(page, query) {
  const field = page.locator('#q');
  await field.focus();
  await field.press('ControlOrMeta+a');
  await field.press('Delete');
  await field.pressSequentially(query);
  await Promise.all([page.waitForURL((u) => u.searchParams.get('q') === query), field.press('Enter')]);
}

const summary = { url, playwright: playwrightVersion };
let browser;
try {
  const args = typeof process.getuid === 'function' && process.getuid() === 0 ? ['--no-sandbox'] : [];
  try {
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args, timeout: TIMEOUT_MS });
  } catch (error) {
    die(`cannot start Chromium at ${CHROMIUM} (Debian's chromium package; make deps installs it): ${error.message}`);
  }
  summary.chromium = browser.version();
  const context = await browser.newContext({ viewport: { width: 1024, height: 768 }, locale: 'de-DE' });
  context.setDefaultTimeout(TIMEOUT_MS);
  const page = await context.newPage();
  const blocked = [];
  page.on('console', (message) => {
    if (/Content Security Policy|Refused to/i.test(message.text())) blocked.push(message.text());
  });

  // The full list.
  const response = await page.goto(url, { waitUntil: 'load' });
  expect(response.status() === 200, `GET ${url} answered ${response.status()}`);
  const headers = response.headers();
  const wantedHeaders = {
    'content-type': 'text/html; charset=utf-8',
    'content-security-policy':
      "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
    'cache-control': 'no-store',
  };
  for (const [name, value] of Object.entries(wantedHeaders)) {
    expect(headers[name] === value, `header ${name}: ${JSON.stringify(headers[name])}, expected ${JSON.stringify(value)}`);
  }
  const list = await shown(page);
  expect(list.lang === 'de', `<html lang> is ${JSON.stringify(list.lang)}, not "de"`);
  expect(list.h1 === 1, `${list.h1} <h1> elements, expected one`);
  expect(list.scripts === 0, `the page has ${list.scripts} <script> elements`);
  expect(list.stated === expected.all.length, `the page states ${list.stated} services, expected ${expected.all.length}`);
  expect(
    sameSet(list.titles, expected.all),
    `the list shows ${JSON.stringify(list.titles)}, expected ${JSON.stringify(expected.all)}`,
  );
  summary.list = { stated: list.stated, listed: list.titles.length, axe: await axe(page, 'full list') };
  fs.mkdirSync(path.dirname(path.resolve(screenshot)), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });
  summary.screenshot = screenshot;

  // Small screens: nothing wider than the viewport.
  await page.setViewportSize({ width: 360, height: 740 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  expect(overflow <= 0, `at 360 px wide the page scrolls sideways by ${overflow} px`);
  summary.narrow = { width: 360, overflow: Math.max(overflow, 0) };
  await page.setViewportSize({ width: 1024, height: 768 });

  // The keyboard: from the top, Tab reaches the skip link first, then the search field.
  await page.goto(url, { waitUntil: 'load' });
  const focused = () =>
    page.evaluate(() => {
      const e = document.activeElement;
      const box = e?.getBoundingClientRect();
      return {
        tag: e?.tagName.toLowerCase(),
        id: e?.id || null,
        text: e?.textContent.trim() || null,
        href: e?.getAttribute('href'),
        visible: !!box && box.width > 0 && box.height > 0 && box.left >= 0 && box.top >= 0 && box.right <= window.innerWidth,
      };
    });
  await page.keyboard.press('Tab');
  const first = await focused();
  expect(
    first.tag === 'a' && first.text === 'Zum Inhalt springen' && first.href === '#inhalt',
    `the first Tab focuses ${JSON.stringify(first)}, not the skip link "Zum Inhalt springen"`,
  );
  expect(first.visible, 'the focused skip link is not visible on the screen');
  await page.keyboard.press('Tab');
  const second = await focused();
  expect(second.tag === 'input' && second.id === 'q', `the second Tab focuses ${JSON.stringify(second)}, not the search field`);
  summary.keyboard = { first: first.text, second: second.id };

  // A search narrows the list and keeps the query in the field.
  await search(page, expected.search.query);
  const found = await shown(page);
  expect(found.query === expected.search.query, `after searching the field holds ${JSON.stringify(found.query)}`);
  expect(
    found.stated === expected.search.titles.length,
    `"${expected.search.query}": the page states ${found.stated} services, expected ${expected.search.titles.length}`,
  );
  expect(
    sameSet(found.titles, expected.search.titles),
    `"${expected.search.query}" lists ${JSON.stringify(found.titles)}, expected ${JSON.stringify(expected.search.titles)}`,
  );
  summary.search = { query: found.query, stated: found.stated, titles: found.titles, axe: await axe(page, 'search result') };

  // A search without a hit says so and helps on.
  await search(page, expected.nothing);
  const none = await shown(page);
  expect(none.stated === 0 && none.titles.length === 0, `"${expected.nothing}" lists ${JSON.stringify(none.titles)}`);
  expect(
    none.empty?.includes('keinen Online-Dienst gefunden') ?? false,
    `"${expected.nothing}": no empty-result message, found ${JSON.stringify(none.empty)}`,
  );
  summary.nothing = { query: none.query, stated: none.stated, message: none.empty, axe: await axe(page, 'empty result') };

  expect(blocked.length === 0, `the Content-Security-Policy blocked something: ${blocked.join(' | ')}`);
  summary.blocked = blocked.length;
} catch (error) {
  failures.push(`the check broke off: ${error.stack ?? error}`);
} finally {
  await browser?.close();
}

summary.failures = failures;
console.log(JSON.stringify(summary, null, 2));
if (failures.length > 0) {
  console.error(`check.mjs: ${failures.length} check(s) failed:\n- ${failures.join('\n- ')}`);
  process.exit(1);
}
