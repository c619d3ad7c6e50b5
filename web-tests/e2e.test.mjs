// The browser client end to end: the real broadcast-service binary on a free loopback port with
// a temporary data dir, pages in headless Chromium (playwright-core, /usr/bin/chromium), drawing
// with synthetic pointer input, and every page's picture compared byte for byte with the
// service's snapshot.png (decoded with protocol.js, never through a canvas).
//
// Env: BS_BIN (default target/debug/broadcast-service), CHROMIUM (default /usr/bin/chromium).
// Screenshots: .test-artifacts/browser-*.png; the service's log: .test-artifacts/browser-bs.log.
// Run: node --test web-tests/e2e.test.mjs (or web-tests/run.sh).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { Raster, blendAt, decodeClientMsg, decodePng, strokeCoverage } from '../broadcast-service/static/protocol.js';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const BS_BIN = resolve(repo, process.env.BS_BIN ?? 'target/debug/broadcast-service');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const ARTIFACTS = join(repo, '.test-artifacts');
// Generous: the service, the browser and cargo builds share two cores.
const DEADLINE_MS = 20_000;

const W = 300;
const H = 200;
// The translucent background the raw client clears the picture to, so that later blends give
// translucent pixels (on opaque white every blend stays opaque).
const BACKGROUND = [200, 220, 255, 90];
// A translucent patch with the alpha values where rounding matters most.
const PATCH = { x: 250, y: 10, w: 6, h: 1, alphas: [0, 1, 127, 128, 254, 255] };

async function until(what, fn, ms = DEADLINE_MS) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${typeof what === 'function' ? what() : what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function freePort() {
  const server = net.createServer();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  await new Promise((r) => server.close(r));
  return port;
}

/** The real service; `stop()` sends SIGTERM (graceful: close 1012, flush) and waits for exit. */
async function startService(port, dataDir, log, extra = []) {
  const child = spawn(BS_BIN, ['--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info' },
  });
  child.stdout.pipe(log, { end: false });
  child.stderr.pipe(log, { end: false });
  const exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
  let dead = null;
  exited.then((e) => {
    dead = e;
  });
  await until('the service to answer /healthz', async () => {
    if (dead) throw new Error(`broadcast-service exited early: ${JSON.stringify(dead)}`);
    try {
      return (await fetch(`http://127.0.0.1:${port}/healthz`)).ok;
    } catch {
      return false;
    }
  });
  return {
    async stop() {
      if (dead) return dead;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), DEADLINE_MS);
      const result = await exited;
      clearTimeout(timer);
      return result;
    },
  };
}

/**
 * Headless Chromium as every test runs it: Debian's build (CHROMIUM), no sandbox or GPU, and
 * nothing in the background (updates, sync, QUIC) to add traffic or time to a test.
 */
function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
    ],
  });
}

async function snapshot(base, id) {
  const res = await fetch(`${base}/pictures/${id}/snapshot.png`);
  assert.equal(res.status, 200);
  const png = await decodePng(new Uint8Array(await res.arrayBuffer()));
  return { ...png, seq: Number(res.headers.get('x-picture-seq')) };
}

/** The page's automation hook, with the picture as base64 (evaluate returns JSON). */
async function pageState(page) {
  return page.evaluate(() => {
    const r = window.raster;
    const bytes = r.rgba();
    let bin = '';
    for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return {
      seq: r.seq === null ? null : Number(r.seq),
      width: r.width,
      height: r.height,
      state: r.state,
      welcomes: r.welcomes,
      presence: r.presence,
      pending: r.pending,
      sent: r.sent,
      rgba: btoa(bin),
    };
  });
}

function firstDifference(a, b) {
  const i = a.findIndex((v, k) => v !== b[k]);
  return i < 0 ? null : i;
}

function pixelsOf(state) {
  return new Uint8Array(Buffer.from(state.rgba, 'base64'));
}

function assertSamePixels(got, want, what, wantName = 'snapshot') {
  assert.equal(got.length, want.length, `${what}: length`);
  const i = got.findIndex((v, k) => v !== want[k]);
  if (i >= 0) {
    const p = Math.floor(i / 4);
    const at = `(${p % W}, ${Math.floor(p / W)})`;
    assert.fail(`${what}: pixel ${at} is ${got.subarray(p * 4, p * 4 + 4)}, ${wantName} has ${want.subarray(p * 4, p * 4 + 4)}`);
  }
}

/**
 * Waits until the service's snapshot is at `seq` and every page has applied exactly that much
 * with nothing of its own in flight; then every page's picture must equal the snapshot.
 */
async function converge(base, id, pages, seq) {
  let seen = null;
  const snap = await until(
    () => `pages and snapshot at seq ${seq}; last seen ${JSON.stringify(seen)}`,
    async () => {
      const s = await snapshot(base, id);
      seen = { snapshot: s.seq, pages: [] };
      for (const page of pages) {
        seen.pages.push(await page.evaluate(() => [Number(window.raster.seq), window.raster.pending]));
      }
      return s.seq === seq && seen.pages.every(([ps, pending]) => ps === seq && pending === 0) ? s : null;
    },
  );
  assert.equal(snap.width, W);
  assert.equal(snap.height, H);
  for (const [n, page] of pages.entries()) {
    const st = await pageState(page);
    assert.equal(st.seq, seq);
    assertSamePixels(pixelsOf(st), snap.pixels, `page ${n}`);
  }
  return snap;
}

/** Screen position of the centre of picture pixel (x, y), whatever the zoom and pan. */
async function screenAt(page, x, y) {
  const box = await page.locator('#picture').boundingBox();
  const zoom = box.width / W;
  return [box.x + (x + 0.5) * zoom, box.y + (y + 0.5) * zoom];
}

async function setBrush(page, { tool, color, opacity, width }) {
  await page.click(`button[data-tool="${tool}"]`);
  if (color !== undefined) await page.fill('#color', color);
  if (opacity !== undefined) await page.fill('#opacity', String(opacity));
  if (width !== undefined) await page.fill('#width', String(width));
}

/** Presses at the first point, moves through the others, releases. */
async function drag(page, points) {
  const box = await page.locator('#picture').boundingBox();
  const zoom = box.width / W;
  const screen = ([x, y]) => [box.x + (x + 0.5) * zoom, box.y + (y + 0.5) * zoom];
  await page.mouse.move(...screen(points[0]));
  await page.mouse.down();
  for (const p of points.slice(1)) await page.mouse.move(...screen(p), { steps: 3 });
  await page.mouse.up();
}

/** A second WebSocket client inside the page: sends ops the tools can't (Clear, Patch). */
async function rawOps(page, id, ops) {
  await page.evaluate(
    async ({ id, ops }) => {
      const p = await import('/static/protocol.js');
      const ws = new WebSocket(`ws://${location.host}/pictures/${id}/ws`);
      ws.binaryType = 'arraybuffer';
      await new Promise((resolve, reject) => {
        let me = null;
        let echoed = 0;
        ws.onerror = () => reject(new Error('raw client: socket error'));
        ws.onmessage = (e) => {
          const m = p.decodeServerMsg(new Uint8Array(e.data));
          if (m.Welcome) {
            me = m.Welcome.client_id;
            ops.forEach((op, i) => {
              if (op.Patch) op.Patch.rgba = Uint8Array.from(op.Patch.rgba);
              ws.send(p.encodeClientMsg({ Draw: { client_seq: BigInt(i + 1), op } }));
            });
          } else if (m.Updates) {
            echoed += m.Updates.filter((u) => u.client_id === me).length;
            if (echoed === ops.length) resolve();
          } else if (m.Rejected || m.Error) {
            reject(new Error(`raw client: ${JSON.stringify(m, (k, v) => (typeof v === 'bigint' ? String(v) : v))}`));
          }
        };
      });
      ws.close();
    },
    { id, ops },
  );
}

/** The Draw ops each page sent, in order, as seen on its WebSocket (decoded with protocol.js). */
const drawsSent = new Map();

function recordDraws(page) {
  const draws = [];
  drawsSent.set(page, draws);
  page.on('websocket', (ws) =>
    ws.on('framesent', ({ payload }) => {
      if (typeof payload === 'string') return;
      const msg = decodeClientMsg(new Uint8Array(payload));
      if (msg.Draw) draws.push(msg.Draw.op);
    }),
  );
}

/**
 * Draws a translucent pen gesture on `page` in several pieces and checks that they drew exactly
 * what one Stroke through all the gesture's points draws on the picture as it was (no darker
 * beads at the joints), and that every page and the snapshot agree.
 */
async function translucentGesture(base, id, pages, page, points, brush) {
  await setBrush(page, { tool: 'pen', ...brush });
  await until('nothing in flight', () => page.evaluate(() => window.raster.pending === 0));
  const before = await pageState(page);
  const start = await converge(base, id, pages, before.seq);
  const draws = drawsSent.get(page);
  const drawsBefore = draws.length;
  const [x, y] = await screenAt(page, ...points[0]);
  await page.mouse.move(x, y);
  await page.mouse.down();
  // Pressed, not moved: nothing sent, and the overlay previews exactly the pen's dot.
  const dot = strokeCoverage(brush.width, [points[0]], { x0: 0, y0: 0, x1: W - 1, y1: H - 1 });
  const shown = await until('the translucent preview on the overlay', async () => {
    const alpha = await page.evaluate(({ w, h }) => {
      const data = document.getElementById('overlay').getContext('2d').getImageData(0, 0, w, h).data;
      return Array.from({ length: w * h }, (_, i) => (data[i * 4 + 3] > 0 ? 1 : 0));
    }, { w: W, h: H });
    return alpha.some((v) => v) ? Uint8Array.from(alpha) : null;
  });
  assert.equal(firstDifference(shown, dot), null, 'the previewed pixels are the dot');
  assert.equal((await pageState(page)).sent, before.sent);
  // Many small moves: more points than one piece takes, so the gesture goes in several.
  for (const p of points.slice(1)) await page.mouse.move(...(await screenAt(page, ...p)), { steps: 15 });
  await page.mouse.up();
  await until('every piece to be echoed', () => page.evaluate(() => window.raster.pending === 0));
  const sent = (await pageState(page)).sent - before.sent;
  const snap = await converge(base, id, pages, before.seq + sent);
  await until('the frames of every piece', () => draws.length === drawsBefore + sent);
  const ops = draws.slice(drawsBefore);

  const g = await page.evaluate(() => window.raster.lastGesture);
  assert.equal(g.tool, 'pen');
  assert.equal(g.width, brush.width);
  assert.ok(g.color[3] < 255, 'translucent');
  assert.deepStrictEqual(g.points[0], points[0]);
  assert.deepStrictEqual(g.points.at(-1), points.at(-1));
  // Pieces of a translucent gesture are Pixels ops, disjoint, together one Stroke's coverage.
  assert.ok(ops.length >= 3, `${ops.length} pieces`);
  const listed = new Set();
  for (const op of ops) {
    assert.deepStrictEqual(Object.keys(op), ['Pixels']);
    assert.deepStrictEqual(op.Pixels.color, g.color);
    for (const [x, y] of op.Pixels.points) {
      const key = y * W + x;
      assert.ok(!listed.has(key), `(${x}, ${y}) is in two pieces`);
      listed.add(key);
    }
  }
  const expect = new Raster(W, H, start.pixels.slice());
  expect.apply({ Stroke: { color: g.color, width: g.width, points: g.points } });
  assertSamePixels(snap.pixels, expect.pixels, 'snapshot after the gesture', 'one Stroke through it');
  return snap;
}

function pixelAt(pixels, x, y) {
  const i = (y * W + x) * 4;
  return [...pixels.subarray(i, i + 4)];
}

test('browser client: draws, converges exactly, joins late, survives a restart', { timeout: 240_000 }, async (t) => {
  assert.ok(existsSync(BS_BIN), `no service binary at ${BS_BIN} (build it, or set BS_BIN)`);
  mkdirSync(ARTIFACTS, { recursive: true });
  const log = createWriteStream(join(ARTIFACTS, 'browser-bs.log'));
  const dataDir = mkdtempSync(join(tmpdir(), 'raster-e2e-'));
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  let service = await startService(port, dataDir, log);
  const browser = await launchBrowser();
  t.after(async () => {
    await browser.close();
    await service.stop();
    log.end();
    rmSync(dataDir, { recursive: true, force: true });
  });
  const context = await browser.newContext({ viewport: { width: 1000, height: 640 } });
  const errors = [];
  const open = async (path) => {
    const page = await context.newPage();
    page.on('pageerror', (e) => errors.push(String(e)));
    recordDraws(page);
    await page.goto(`${base}${path}`);
    return page;
  };

  const id = `e2e-${process.pid}-${Date.now()}`;
  const [a, b] = [await open(`/p/${id}?width=${W}&height=${H}`), await open(`/p/${id}?width=${W}&height=${H}`)];
  for (const page of [a, b]) await until('both pages to join', () => page.evaluate(() => window.raster.presence === 2));
  let st = await pageState(a);
  assert.equal(st.width, W);
  assert.equal(st.height, H);
  assert.equal(st.seq, 0);
  assert.deepStrictEqual(pixelAt(pixelsOf(st), 0, 0), [255, 255, 255, 255]);

  // Ops the raw client sends: a translucent Clear, then a Patch over it.
  const patchRgba = PATCH.alphas.flatMap((al, i) => [40 * i, 255 - 40 * i, 100, al]);
  await rawOps(a, id, [
    { Clear: { color: BACKGROUND } },
    { Patch: { x: PATCH.x, y: PATCH.y, w: PATCH.w, h: PATCH.h, rgba: patchRgba } },
  ]);
  const rawSent = 2;
  await converge(base, id, [a, b], rawSent);

  await t.test('own stroke is previewed before it is sequenced', async () => {
    await setBrush(a, { tool: 'pen', color: '#112233', opacity: 255, width: 5 });
    const [x, y] = await screenAt(a, 150, 100);
    await a.mouse.move(x, y);
    await a.mouse.down();
    // Nothing is sent until the pointer moves or lifts: this is the draft's preview alone.
    const px = await until('the preview on the overlay', async () => {
      const data = await a.evaluate(() => [
        ...document.getElementById('overlay').getContext('2d').getImageData(150, 100, 1, 1).data,
      ]);
      return data[3] > 0 ? data : null;
    });
    assert.deepStrictEqual(px, [0x11, 0x22, 0x33, 255]);
    assert.equal((await pageState(a)).sent, 0);
    await a.mouse.up();
    await until('the echo to replace the preview', () =>
      a.evaluate(
        () =>
          window.raster.pending === 0 &&
          window.raster.seq === 3 &&
          document.getElementById('overlay').getContext('2d').getImageData(150, 100, 1, 1).data[3] === 0,
      ),
    );
  });

  await t.test('strokes, rectangle and pixels converge on every page and match the snapshot', async () => {
    await setBrush(a, { tool: 'pen', color: '#d01010', opacity: 255, width: 5 });
    await drag(a, [[10, 10], [60, 30], [120, 20], [180, 60], [230, 40]]);
    await translucentGesture(base, id, [a, b], a, [[20, 60], [100, 5], [140, 90], [200, 10]], {
      color: '#1040e0',
      opacity: 100,
      width: 9,
    });
    await setBrush(a, { tool: 'rect', color: '#10a040', opacity: 128 });
    await drag(a, [[20, 120], [80, 170]]);
    await setBrush(a, { tool: 'pixel', color: '#802080', opacity: 200 });
    await drag(a, [[100, 150], [160, 152], [200, 180]]);
    await setBrush(a, { tool: 'eraser', width: 7 });
    await drag(a, [[60, 25], [70, 35]]);
    await until('every op to be echoed', () => a.evaluate(() => window.raster.pending === 0));
    const sent = (await pageState(a)).sent;
    assert.ok(sent >= 6, `sent ${sent} ops`);
    const snap = await converge(base, id, [a, b], sent + rawSent);

    // Exact values worked out here, independently of the service and of the page.
    const expect = new Raster(W, H);
    expect.apply({ Clear: { color: BACKGROUND } });
    expect.apply({ Patch: { x: PATCH.x, y: PATCH.y, w: PATCH.w, h: PATCH.h, rgba: Uint8Array.from(patchRgba) } });
    for (let i = 0; i < PATCH.w; i++) {
      assert.deepStrictEqual(pixelAt(snap.pixels, PATCH.x + i, PATCH.y), pixelAt(expect.pixels, PATCH.x + i, PATCH.y));
    }
    const inRect = [...BACKGROUND];
    blendAt(inRect, 0, 0x10, 0xa0, 0x40, 128);
    assert.deepStrictEqual(pixelAt(snap.pixels, 50, 145), inRect);
    assert.ok(inRect[3] < 255, 'the rectangle is translucent');
    assert.deepStrictEqual(pixelAt(snap.pixels, 150, 100), [0x11, 0x22, 0x33, 255]);
    await a.screenshot({ path: join(ARTIFACTS, 'browser-drawing.png') });

    // "Download PNG" saves the picture itself.
    const [download] = await Promise.all([a.waitForEvent('download'), a.click('#download')]);
    assert.equal(download.suggestedFilename(), `${id}.png`);
    const saved = await decodePng(new Uint8Array(readFileSync(await download.path())));
    assertSamePixels(saved.pixels, snap.pixels, 'downloaded PNG');
  });

  await t.test('the picker takes the exact colour and opacity from the picture', async () => {
    await setBrush(a, { tool: 'picker' });
    const [x, y] = await screenAt(a, 50, 145);
    await a.mouse.click(x, y);
    const picked = await a.evaluate(() => [document.getElementById('color').value, document.getElementById('opacity').value]);
    const px = pixelAt(pixelsOf(await pageState(a)), 50, 145);
    const hex = `#${px.slice(0, 3).map((v) => v.toString(16).padStart(2, '0')).join('')}`;
    assert.deepStrictEqual(picked, [hex, String(px[3])]);
  });

  await t.test('drawing at another zoom lands on the pixel under the pointer', async () => {
    await a.click('#zoom-in');
    await a.click('#zoom-in');
    assert.equal(await a.textContent('#zoom'), '156%');
    await setBrush(a, { tool: 'pixel', color: '#000000', opacity: 255 });
    const before = (await pageState(a)).sent;
    const [x, y] = await screenAt(a, 291, 193);
    await a.mouse.click(x, y);
    await until('the echo', () => a.evaluate(() => window.raster.pending === 0));
    assert.equal((await pageState(a)).sent, before + 1);
    const snap = await converge(base, id, [a, b], before + 1 + rawSent);
    assert.deepStrictEqual(pixelAt(snap.pixels, 291, 193), [0, 0, 0, 255]);
    assert.deepStrictEqual(pixelAt(snap.pixels, 290, 193), BACKGROUND);
    await a.click('#zoom-reset');
  });

  await t.test('an op over the limits is rejected: its preview goes, a message shows', async () => {
    const before = await pageState(a);
    // The slider stops at the protocol's limit; lift it to send a too-wide stroke.
    await a.evaluate(() => {
      const w = document.getElementById('width');
      w.max = '1000';
      w.value = '300';
      w.dispatchEvent(new Event('input'));
    });
    await a.click('button[data-tool="pen"]');
    const [x, y] = await screenAt(a, 100, 100);
    await a.mouse.click(x, y);
    await until('the rejection message', () => a.evaluate(() => !document.getElementById('toast').hidden));
    assert.match(await a.textContent('#toast'), /^Not drawn: /);
    await until('the preview to go', () =>
      a.evaluate(
        () =>
          window.raster.pending === 0 &&
          document.getElementById('overlay').getContext('2d').getImageData(100, 100, 1, 1).data[3] === 0,
      ),
    );
    await a.screenshot({ path: join(ARTIFACTS, 'browser-rejected.png') });
    const after = await pageState(a);
    assert.equal(after.sent, before.sent + 1);
    await converge(base, id, [a, b], before.seq);
    await a.fill('#width', '5');
  });

  await t.test('a page joining late gets the translucent pixels exactly', async () => {
    const c = await open(`/p/${id}`);
    await until('the third page to join', () => c.evaluate(() => window.raster.presence === 3));
    const seq = (await pageState(a)).seq;
    const snap = await converge(base, id, [a, b, c], seq);
    const translucent = [];
    for (let i = 3; i < snap.pixels.length; i += 4) if (snap.pixels[i] > 0 && snap.pixels[i] < 255) translucent.push(i);
    assert.ok(translucent.length > W * H / 2, `${translucent.length} translucent pixels`);
    await c.screenshot({ path: join(ARTIFACTS, 'browser-joined.png') });
    await c.close();
    await until('presence back to 2', () => a.evaluate(() => window.raster.presence === 2));
  });

  await t.test('a restart of the service: pages show it, reconnect and resynchronise', async () => {
    const seq = (await pageState(a)).seq;
    const stopped = await service.stop();
    // SIGTERM is a graceful shutdown: pictures handed to storage, then a clean exit.
    assert.deepStrictEqual(stopped, { code: 0, signal: null });
    for (const page of [a, b]) {
      await until('the page to notice', () => page.evaluate(() => window.raster.state === 'reconnecting'));
    }
    assert.match(await a.textContent('#state'), /^Offline/);
    await a.screenshot({ path: join(ARTIFACTS, 'browser-offline.png') });
    service = await startService(port, dataDir, log);
    for (const page of [a, b]) {
      await until('the page to reconnect', () =>
        page.evaluate(() => window.raster.state === 'connected' && window.raster.welcomes === 2),
      );
    }
    assert.equal(await a.textContent('#state'), 'Reconnected');
    // Sequence numbers survive the restart, and so does every pixel.
    await converge(base, id, [a, b], seq);

    await translucentGesture(base, id, [a, b], a, [[30, 180], [150, 120], [280, 190]], {
      color: '#ff8000',
      opacity: 180,
      width: 11,
    });
    await a.screenshot({ path: join(ARTIFACTS, 'browser-reconnected.png') });
  });

  await t.test('the index page lists the picture and creates new ones', async () => {
    const index = await open('/');
    const link = index.locator(`.recent a[href="/p/${id}"]`);
    await until('the recent entry', async () => (await link.count()) === 1);
    assert.match(await link.textContent(), new RegExp(`${id}${W} × ${H}`));
    await index.screenshot({ path: join(ARTIFACTS, 'browser-index.png') });
    const fresh = `${id}-new`;
    await index.fill('#id', fresh);
    await index.fill('#width', '64');
    await index.fill('#height', '48');
    await index.click('button[type="submit"]');
    await index.waitForURL(`${base}/p/${fresh}?width=64&height=48`);
    await until('the new picture', () => index.evaluate(() => window.raster.seq === 0));
    const created = await pageState(index);
    assert.deepStrictEqual([created.width, created.height], [64, 48]);
    assert.ok(pixelsOf(created).every((v) => v === 255));
  });

  assert.deepStrictEqual(errors, []);
});

/**
 * A TCP proxy in front of the service whose connections the test can break the way a network
 * does: `hold('up')` / `hold('down')` silently drops what the current connections carry in one
 * direction (page to service, service to page), `cut()` destroys them all. New connections are
 * forwarded normally.
 */
async function startProxy(targetPort) {
  const links = new Set();
  const server = net.createServer((page) => {
    const service = net.connect(targetPort, '127.0.0.1');
    const link = { page, service, up: true, down: true };
    links.add(link);
    page.on('data', (d) => link.up && service.write(d));
    service.on('data', (d) => link.down && page.write(d));
    const end = () => {
      page.destroy();
      service.destroy();
      links.delete(link);
    };
    for (const socket of [page, service]) {
      socket.on('close', end);
      socket.on('error', end);
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: server.address().port,
    hold(direction) {
      for (const link of links) link[direction] = false;
    },
    cut() {
      for (const link of [...links]) {
        link.page.destroy();
        link.service.destroy();
      }
      links.clear();
    },
    close() {
      this.cut();
      return new Promise((r) => server.close(r));
    },
  };
}

test('browser client: a cut connection resumes with the picture kept, every op once, then "Saved"', { timeout: 120_000 }, async (t) => {
  assert.ok(existsSync(BS_BIN), `no service binary at ${BS_BIN} (build it, or set BS_BIN)`);
  mkdirSync(ARTIFACTS, { recursive: true });
  const log = createWriteStream(join(ARTIFACTS, 'browser-resume-bs.log'));
  const dataDir = mkdtempSync(join(tmpdir(), 'raster-e2e-resume-'));
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  // Flushed 3 s after a change, so that "Saved" comes within the test; a flush trims the log
  // a resume is served from, so the cut below comes well within those 3 s.
  const FLUSH_MS = 3000;
  const service = await startService(port, dataDir, log, ['--flush-interval', `${FLUSH_MS}ms`]);
  const proxy = await startProxy(port);
  const browser = await launchBrowser();
  t.after(async () => {
    await browser.close();
    await proxy.close();
    await service.stop();
    log.end();
    rmSync(dataDir, { recursive: true, force: true });
  });
  const context = await browser.newContext({ viewport: { width: 1000, height: 640 } });
  const errors = [];
  const open = async (url) => {
    const page = await context.newPage();
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(url);
    return page;
  };
  const id = `resume-${process.pid}-${Date.now()}`;
  // Page `a` goes through the proxy; its WebSocket asks for durable=1 and a session.
  const a = await open(`http://127.0.0.1:${proxy.port}/p/${id}?width=${W}&height=${H}`);
  const urls = [];
  a.on('websocket', (ws) => urls.push(new URL(ws.url())));
  await until('connected', () => a.evaluate(() => window.raster.state === 'connected'));
  // Another page, straight to the service, keeps the picture open there while `a` is cut off
  // (a picture whose last client leaves is closed and flushed at once: a lone page always
  // gets a full Welcome back, with its ops still settled by the Session message).
  const b = await open(`${base}/p/${id}`);
  await until('both pages', () => b.evaluate(() => window.raster.presence === 2));
  await a.bringToFront();
  await until('"Saved" on a blank picture', async () => (await a.textContent('#saved')) === 'Saved');
  const drawn = async (brush, rects) => {
    await setBrush(a, brush);
    for (const r of rects) await drag(a, r);
  };
  await drawn({ tool: 'rect', color: '#10a040', opacity: 120 }, [[[10, 10], [120, 90]]]);
  await until('echoed', () => a.evaluate(() => window.raster.pending === 0));
  const s0 = (await pageState(a)).seq;
  assert.equal(s0, 1);
  await until('"Saved" after the first flush', async () => (await a.textContent('#saved')) === 'Saved');
  const dirtySince = Date.now();

  // 1. Echoes lost: ops reach the service (sequenced) but nothing comes back.
  proxy.hold('down');
  await drawn({ tool: 'rect', color: '#d01010', opacity: 100 }, [[[40, 40], [200, 150]], [[60, 20], [90, 180]]]);
  await drawn({ tool: 'pen', color: '#1040e0', opacity: 90, width: 9 }, [[[20, 100], [150, 60], [280, 120]]]);
  const n1 = (await pageState(a)).sent - 1;
  assert.ok(n1 >= 3, `${n1} ops`);
  await until('the service to sequence them', async () => (await snapshot(base, id)).seq === s0 + n1);
  assert.equal((await pageState(a)).pending, n1);
  assert.equal(await a.textContent('#saved'), 'Saving…', 'ops without an echo are not saved');
  // 2. Ops lost: sent by the page, never delivered.
  proxy.hold('up');
  await drawn({ tool: 'rect', color: '#802080', opacity: 140 }, [[[100, 60], [260, 190]], [[5, 150], [295, 170]]]);
  const n2 = (await pageState(a)).sent - 1 - n1;
  assert.ok(n2 >= 2, `${n2} ops`);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal((await snapshot(base, id)).seq, s0 + n1, 'the held ops never arrived');
  // 3. The connection breaks: the page resumes after the last seq it applied, keeps its
  // picture, and sends again exactly the n2 ops the service never sequenced.
  proxy.cut();
  await until('resumed', () =>
    a.evaluate(() => window.raster.state === 'connected' && window.raster.welcomes === 2 && window.raster.pending === 0),
  );
  const resumedAfter = Date.now() - dirtySince;
  const st = await a.evaluate(() => ({ resumes: window.raster.resumes, resent: window.raster.resent, sent: window.raster.sent }));
  // The picture is kept (a Welcome without a snapshot) unless a flush trimmed the log first,
  // which only a machine too slow to cut within the flush interval sees.
  if (st.resumes === 0) {
    assert.ok(resumedAfter > FLUSH_MS * 0.8, `a full Welcome after only ${resumedAfter} ms`);
    t.diagnostic(`full Welcome: the cut came ${resumedAfter} ms after the change, past the flush`);
  }
  assert.deepStrictEqual(st, { resumes: st.resumes, resent: n2, sent: 1 + n1 + n2 });
  t.diagnostic(`resumed after ${resumedAfter} ms: resumes ${st.resumes}, resent ${n2} of ${n1 + n2} unanswered ops`);
  const ws = urls.at(-1).searchParams;
  assert.equal(ws.get('since'), String(s0));
  assert.equal(ws.get('durable'), '1');
  assert.equal(ws.get('session'), urls[0].searchParams.get('session'));
  // Every op once: the picture has exactly 1 + n1 + n2 updates, and a fresh joiner (a full
  // Welcome), the other page and snapshot.png have the resumed page's picture, byte for byte.
  const c = await open(`${base}/p/${id}`);
  await until('the joiner', () => c.evaluate(() => window.raster.state === 'connected'));
  await converge(base, id, [a, b, c], 1 + n1 + n2);
  await until('"Saved" after the flush', async () =>
    (await a.textContent('#saved')) === 'Saved' && (await a.evaluate(() => window.raster.saved)),
  );
  assert.equal(await a.evaluate(() => window.raster.durable), 1 + n1 + n2);
  await a.screenshot({ path: join(ARTIFACTS, 'browser-resumed.png') });
  assert.deepStrictEqual(errors, []);
});

/** An HS256 JWT with `claims`, signed with `secret` (what an application's backend issues). */
async function hs256(secret, claims) {
  const { createHmac } = await import('node:crypto');
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

test('browser client: a view-only token shows "View only" and hides the drawing tools', { timeout: 120_000 }, async (t) => {
  assert.ok(existsSync(BS_BIN), `no service binary at ${BS_BIN} (build it, or set BS_BIN)`);
  mkdirSync(ARTIFACTS, { recursive: true });
  const log = createWriteStream(join(ARTIFACTS, 'browser-bs-tokens.log'));
  const dataDir = mkdtempSync(join(tmpdir(), 'raster-e2e-tokens-'));
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const secret = 'web-test-secret';
  const service = await startService(port, dataDir, log, ['--token-secret', secret]);
  const browser = await launchBrowser();
  t.after(async () => {
    await browser.close();
    await service.stop();
    log.end();
    rmSync(dataDir, { recursive: true, force: true });
  });
  const context = await browser.newContext({ viewport: { width: 1000, height: 640 } });
  const id = `tokens-${process.pid}`;
  const exp = Math.floor(Date.now() / 1000) + 3600;
  const open = async (role) => {
    const page = await context.newPage();
    const token = await hs256(secret, { pic: id, role, exp });
    await page.goto(`${base}/p/${id}?width=64&height=48&token=${token}`);
    await until(`the ${role} page to connect`, () => page.evaluate(() => window.raster.state === 'connected'));
    return page;
  };

  const viewer = await open('view');
  assert.equal(await viewer.evaluate(() => window.raster.viewOnly), true);
  assert.equal(await viewer.locator('#view-only').isVisible(), true);
  for (const tool of ['pen', 'eraser', 'rect', 'pixel']) {
    assert.equal(await viewer.locator(`button[data-tool="${tool}"]`).isVisible(), false, `${tool} hidden`);
  }
  assert.equal(await viewer.locator('button[data-tool="pan"]').isVisible(), true);
  assert.equal(await viewer.locator('#color').isVisible(), false);
  assert.match(await viewer.locator('#download').getAttribute('href'), /snapshot\.png\?token=/);
  await viewer.screenshot({ path: join(ARTIFACTS, 'browser-view-only.png') });

  const drawer = await open('draw');
  assert.equal(await drawer.evaluate(() => window.raster.viewOnly), false);
  assert.equal(await drawer.locator('#view-only').isVisible(), false);
  assert.equal(await drawer.locator('button[data-tool="pen"]').isVisible(), true);
  await until('both pages on the picture', () => viewer.evaluate(() => window.raster.presence === 2));
});

test('browser client: the history slider shows every stored version exactly, and plays the timelapse', { timeout: 120_000 }, async (t) => {
  assert.ok(existsSync(BS_BIN), `no service binary at ${BS_BIN} (build it, or set BS_BIN)`);
  mkdirSync(ARTIFACTS, { recursive: true });
  const log = createWriteStream(join(ARTIFACTS, 'browser-bs-history.log'));
  const dataDir = mkdtempSync(join(tmpdir(), 'raster-e2e-history-'));
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  // A version at every flush, and flushes soon after each change.
  const service = await startService(port, dataDir, log, ['--history-interval', '0s', '--flush-interval', '100ms']);
  const browser = await launchBrowser();
  t.after(async () => {
    await browser.close();
    await service.stop();
    log.end();
    rmSync(dataDir, { recursive: true, force: true });
  });
  const context = await browser.newContext({ viewport: { width: 1000, height: 640 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const id = `history-${process.pid}`;
  const [w, h] = [64, 48];
  await page.goto(`${base}/p/${id}?width=${w}&height=${h}`);
  await until('the page to connect', () => page.evaluate(() => window.raster.state === 'connected'));

  const listed = async () => (await (await fetch(`${base}/pictures/${id}/history`)).json()).versions.map((v) => v.seq);
  // Three steps of opaque rectangles (opaque: the canvas gives back exactly what it was given);
  // after each, wait for the version at that seq.
  const steps = [
    [{ Rect: { x: 0, y: 0, w: 20, h: 10, color: [200, 30, 30, 255] } }],
    [{ Rect: { x: 10, y: 5, w: 30, h: 30, color: [30, 160, 40, 255] } }, { Rect: { x: 60, y: 40, w: 4, h: 8, color: [0, 0, 0, 255] } }],
    [{ Clear: { color: [250, 240, 10, 255] } }],
  ];
  let seq = 0;
  for (const ops of steps) {
    await rawOps(page, id, ops);
    seq += ops.length;
    await until(`version ${seq} to be stored`, async () => (await listed()).includes(seq));
  }
  const seqs = await listed();
  assert.ok(seqs.length >= 3 && seqs.at(-1) === seq, JSON.stringify(seqs));
  const versions = [];
  for (const s of seqs) {
    const res = await fetch(`${base}/pictures/${id}/history/${s}.png`);
    assert.equal(res.status, 200);
    const png = await decodePng(new Uint8Array(await res.arrayBuffer()));
    assert.equal(png.seq, BigInt(s));
    versions.push(png);
  }

  await page.click('#history-refresh');
  await until('the page to list the versions', () => page.evaluate((n) => window.raster.history.versions.length === n, seqs.length));
  assert.equal(await page.locator('#history').getAttribute('max'), String(seqs.length));
  for (const [i, s] of seqs.entries()) {
    await page.evaluate((i) => {
      const slider = document.getElementById('history');
      slider.value = String(i);
      slider.dispatchEvent(new Event('input', { bubbles: true }));
    }, i);
    await until(`the page to show version ${s}`, () => page.evaluate((s) => window.raster.history.shown === s, s));
    const shown = await page.evaluate(() => {
      const canvas = document.getElementById('version');
      const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
      return { hook: Array.from(window.raster.versionRgba()), canvas: Array.from(data), size: [canvas.width, canvas.height], visible: !canvas.hidden };
    });
    assert.deepStrictEqual(shown.size, [w, h]);
    assert.ok(shown.visible, 'the version canvas is shown');
    assertSamePixels(Uint8Array.from(shown.hook), versions[i].pixels, `version ${s} (hook)`, 'stored version');
    assertSamePixels(Uint8Array.from(shown.canvas), versions[i].pixels, `version ${s} (displayed)`, 'stored version');
    assert.match(await page.locator('#history-label').textContent(), new RegExp(`^seq ${s} `));
  }
  await page.screenshot({ path: join(ARTIFACTS, 'browser-history.png') });
  // Drawing is paused while a version is shown.
  const sentBefore = await page.evaluate(() => window.raster.sent);
  const box = await page.locator('#picture').boundingBox();
  await page.mouse.click(box.x + 5, box.y + 5);
  assert.equal(await page.evaluate(() => window.raster.sent), sentBefore);
  // The slider's end is live again.
  await page.evaluate((n) => {
    const slider = document.getElementById('history');
    slider.value = String(n);
    slider.dispatchEvent(new Event('input', { bubbles: true }));
  }, seqs.length);
  await until('live again', () => page.evaluate(() => window.raster.history.shown === null));
  assert.equal(await page.locator('#version').isVisible(), false);
  assert.equal(await page.locator('#history-label').textContent(), 'live');

  // Play: the timelapse loads in the <img> over the picture, at the picture's size.
  await page.click('#history-play');
  const played = await until('the timelapse to load', () =>
    page.evaluate(() => {
      const img = document.getElementById('timelapse');
      return img.complete && img.naturalWidth > 0 ? { w: img.naturalWidth, h: img.naturalHeight, src: img.getAttribute('src'), visible: !img.hidden } : null;
    }),
  );
  assert.deepStrictEqual([played.w, played.h, played.visible], [w, h, true]);
  assert.equal(played.src, `/pictures/${id}/timelapse?delay=300`);
  assert.equal(await page.evaluate(() => window.raster.history.playing), true);
  await page.screenshot({ path: join(ARTIFACTS, 'browser-timelapse.png') });
  await page.click('#history-play');
  assert.equal(await page.evaluate(() => window.raster.history.playing), false);
  assert.equal(await page.locator('#timelapse').isVisible(), false);
  assert.deepStrictEqual(errors, []);
});
