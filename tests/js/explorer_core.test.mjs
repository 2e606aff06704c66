// The Explorer's math against what the Python core computes on the shared fixtures (1/255 per channel).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import * as core from "../../web/latent_core.js";

const fixtures = new URL("../fixtures/explorer/", import.meta.url);
const data = JSON.parse(readFileSync(new URL("../../web/latent_lab_data.json", import.meta.url), "utf8"));
const { cases } = JSON.parse(readFileSync(new URL("cases.json", fixtures), "utf8"));

function bytes(b64) {
  return new Uint8Array(Buffer.from(b64, "base64"));
}

function rgbOf(rgba) {
  const out = new Uint8Array((rgba.length / 4) * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4) { out[j++] = rgba[i]; out[j++] = rgba[i + 1]; out[j++] = rgba[i + 2]; }
  return out;
}

function maxDifference(a, b) {
  assert.equal(a.length, b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

export function render(latent, settings) {
  const [, C, H, W] = latent.shape;
  const N = H * W;
  const format = data.formats[settings.format];
  const affine = core.scaledAffine(core.rgbAffine(format, settings.factors), format);
  const original = core.itemScaled(latent, settings.item, format);
  const corrected = core.applyCorrections(original, C, N, settings, data, affine);
  return { C, H, W, N, affine, original, corrected };
}

for (const fixture of cases) {
  test(`fixture ${fixture.name}`, () => {
    const buffer = readFileSync(new URL(fixture.latent, fixtures));
    const latent = core.readLatent(buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength));
    assert.deepEqual(latent.shape, fixture.shape);
    const { C, H, W, N, affine, original, corrected } = render(latent, fixture.settings);
    const expected = fixture.expected;

    assert.ok(maxDifference(rgbOf(core.previewRGBA(corrected, C, H, W, affine)), bytes(expected.preview)) <= 1, "preview");
    const bounds = core.mapBounds(corrected, C, N, fixture.settings.mapScale);
    bounds.forEach((b, c) => assert.ok(Math.abs(b - expected.bounds[c]) <= 1e-4 * Math.max(1, b), `bound ${c}`));
    for (let c = 0; c < C; c++) {
      const map = rgbOf(core.mapRGBA(corrected, c, N, bounds[c], data.diverging));
      assert.ok(maxDifference(map, bytes(expected.maps[c])) <= 1, `map ${c}`);
    }
    const mean = core.meanColor(corrected, C, N, affine);
    mean.forEach((v, k) => assert.ok(Math.abs(v - expected.mean_color[k]) < 1e-4, `mean color ${k}: ${v} vs ${expected.mean_color[k]}`));

    const [lo, hi] = core.valueRange(original, corrected);
    const histogram = expected.histogram;
    assert.ok(Math.abs(lo - histogram.lo) < 1e-4 && Math.abs(hi - histogram.hi) < 1e-4, "histogram range");
    const counts = core.histograms(corrected, C, N, histogram.bins, histogram.lo, histogram.hi);
    const before = core.histograms(original, C, N, histogram.bins, histogram.lo, histogram.hi);
    for (let c = 0; c < C; c++) {
      // values on a bin edge may fall either side with float32 (Python) against float64 (JS) arithmetic
      const moved = counts[c].reduce((acc, n, i) => acc + Math.abs(n - histogram.counts[c][i]), 0);
      assert.ok(moved <= 4, `histogram channel ${c}: ${moved} values in other bins`);
      assert.equal(counts[c].reduce((a, b) => a + b, 0), N);
      const movedBefore = before[c].reduce((acc, n, i) => acc + Math.abs(n - histogram.original[c][i]), 0);
      assert.ok(movedBefore <= 4, `original histogram channel ${c}`);
    }

    const exported = core.exportNodes(fixture.settings, data, C);
    assert.deepEqual(exported.nodes.map((n) => n.type), fixture.nodes.map(([type]) => type));
    exported.nodes.forEach((node, i) => {
      const spec = data.nodes[node.type];
      const byName = Object.fromEntries(spec.widgets.map((w, k) => [w.name, node.widgets_values[k]]));
      for (const [name, value] of Object.entries(fixture.nodes[i][1])) assert.deepEqual(byName[name], value, `${node.type}.${name}`);
    });
  });
}

test("corrections never change their input", () => {
  const x = Float64Array.from({ length: 4 * 6 }, (_, i) => Math.sin(i) * 6);
  const copy = Float64Array.from(x);
  core.center(x, 4, 6, [1, 1, 1, 1], 1);
  core.softClamp(x, 4, 6, 3.5, 4, "pixel");
  core.maximize(x, 4, 6, 4, [0, 1], data.min_peak);
  const format = data.formats.sdxl;
  core.colorBalance(x, 4, 6, core.scaledAffine(core.rgbAffine(format), format), null, [0, 1, 2], data.rec709_luma);
  assert.deepEqual(x, copy);
});

test("soft clamp keeps values inside ±boundary and leaves an item inside alone", () => {
  const x = Float64Array.from({ length: 4 * 50 }, (_, i) => Math.sin(i * 1.7) * 9);
  const out = core.softClamp(x, 4, 50, 3.5, 4, "pixel");
  assert.ok(out.every((v) => Math.abs(v) <= 4 + 1e-12));
  const small = Float64Array.from({ length: 8 }, (_, i) => i / 4);
  assert.deepEqual(core.softClamp(small, 2, 4, 0.5, 4), small);
  assert.throws(() => core.softClamp(x, 4, 50, 4, 4), core.LatentError);
});

test("color balance reaches a neutral mean color exactly when three channels span RGB", () => {
  const format = data.formats.sdxl;
  const affine = core.scaledAffine(core.rgbAffine(format), format);
  const x = Float64Array.from({ length: 4 * 30 }, (_, i) => Math.cos(i * 0.37) * 3 + (i < 30 ? 2 : 0));
  const out = core.colorBalance(x, 4, 30, affine, null, [0, 1, 2], data.rec709_luma);
  const [r, g, b] = core.meanColor(out, 4, 30, affine);
  assert.ok(Math.abs(r - g) < 1e-9 && Math.abs(g - b) < 1e-9);
});

test("readLatent refuses what it cannot show, with a reason", () => {
  assert.throws(() => core.readLatent(new ArrayBuffer(4)), /too short/);
  const header = new TextEncoder().encode(JSON.stringify({ other: { dtype: "F32", shape: [1], data_offsets: [0, 4] } }));
  const buffer = new ArrayBuffer(8 + header.length + 4);
  new DataView(buffer).setBigUint64(0, BigInt(header.length), true);
  new Uint8Array(buffer, 8, header.length).set(header);
  assert.throws(() => core.readLatent(buffer), /latent_tensor/);
});

test("maximize leaves near-empty channels alone, as the node does", () => {
  const x = Float64Array.from({ length: 4 * 6 }, (_, i) => (i < 12 ? 1e-13 : 2));
  assert.deepEqual(core.maximize(x, 4, 6, 4, [0, 1], data.min_peak), x);
  assert.equal(Math.max(...core.maximize(x, 4, 6, 4, [2], data.min_peak).slice(12, 18)), 4);
});
