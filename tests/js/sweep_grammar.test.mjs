// The browser's sweep grammar against the vectors the Python grammar is tested with.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { parseValues, SweepGrammarError, sweepPreview, shortList, formatNumber, splitItem, MAX_TEXT } from "../../js/lib/sweep_grammar.js";

const vectors = JSON.parse(readFileSync(new URL("../vectors/sweep_grammar.json", import.meta.url), "utf8"));

for (const [index, vector] of vectors.entries()) {
  const label = `${index}: ${vector.kind} ${JSON.stringify(vector.text).slice(0, 40)}`;
  test(label, () => {
    if ("error" in vector) {
      assert.throws(() => parseValues(vector.text, vector.kind, vector.base ?? 0),
        (error) => error instanceof SweepGrammarError && error.kind === vector.error && error.problem.length > 0 && error.fix.length > 0);
      return;
    }
    const values = parseValues(vector.text, vector.kind, vector.base ?? 0);
    if (vector.kind === "seed") assert.deepEqual(values, vector.values.map((v) => BigInt(v)));
    else assert.deepEqual(values, vector.values);
  });
}

test("the vectors cover every error kind and both axes", () => {
  const kinds = new Set(vectors.filter((v) => v.error).map((v) => v.error));
  for (const kind of ["empty", "syntax", "range", "duplicate", "too_many", "count", "zero_step", "step_direction", "not_integer", "relative", "non_finite", "too_long"]) {
    assert.ok(kinds.has(kind), kind);
  }
});

test("seeds keep full 64-bit precision", () => {
  assert.deepEqual(parseValues("18446744073709551614-18446744073709551615", "seed"), [18446744073709551614n, 18446744073709551615n]);
  assert.deepEqual(parseValues("+2", "seed", 18446744073709551614n), [18446744073709551614n, 18446744073709551615n]);
  assert.throws(() => parseValues("+3", "seed", 18446744073709551614n), (e) => e.kind === "range");
});

test("sweepPreview counts cells as CFG values × seeds", () => {
  assert.equal(sweepPreview("3, 5, 7", "", 42).cells, 3);
  const both = sweepPreview("2-12 [6]", "+4", 10);
  assert.equal(both.cells, 24);
  assert.deepEqual(both.seeds, [10n, 11n, 12n, 13n]);
  assert.equal(sweepPreview("1-64", "1, 2", 0, 64).tooMany, true);
  assert.equal(sweepPreview("3,,4", "", 0).error.kind, "syntax");
});

test("sweepPreview counts guidance values as a third factor; empty means no guidance axis", () => {
  const plain = sweepPreview("1", "", 0, 64, "");
  assert.equal(plain.guidance, null);
  assert.equal(plain.cells, 1);
  const guided = sweepPreview("1, 3", "+2", 5, 64, "2-4.5 (+0.5)");
  assert.deepEqual(guided.guidance, [2, 2.5, 3, 3.5, 4, 4.5]);
  assert.equal(guided.cells, 24);
  assert.equal(sweepPreview("1", "", 0, 10, "1-11").tooMany, true);
  const bad = sweepPreview("1", "", 0, 64, "2, 150").error;
  assert.equal(bad.kind, "range");
  assert.match(bad.problem, /^guidance 150 /);
});

test("shortList and formatNumber print like the Python grammar", () => {
  assert.equal(formatNumber(0.30000000000000004), "0.3");
  assert.equal(formatNumber(7), "7");
  assert.equal(shortList([1, 2, 3]), "1, 2, 3");
  assert.equal(shortList(Array.from({ length: 30 }, (_, i) => i)), "0, 1, 2, 3, 4, 5, 6, 7, 8, …, 28, 29");
});

test("hostile lists are refused fast, with a short message", () => {
  const long = 30000;
  const cases = [
    ["1-" + " ".repeat(long) + "[", "cfg", "syntax"],
    ["2-12 (" + " ".repeat(long) + "a b)", "cfg", "syntax"],
    ["1".repeat(long), "seed", "range"],
    ["+" + "9".repeat(long), "seed", "too_many"],
    ["1".repeat(100000), "seed", "too_long"],
  ];
  for (const [text, kind, error] of cases) {
    const start = performance.now();
    assert.throws(() => parseValues(text, kind), (e) => e.kind === error && e.message.length < 400 && !e.message.includes(text.trim()));
    assert.ok(performance.now() - start < 500, `${kind} ${text.slice(0, 12)}`);
  }
  const start = performance.now();
  assert.equal(splitItem("1-" + " ".repeat(100000) + "["), null);
  assert.ok(performance.now() - start < 500);
});

test("the length cap counts characters as Python does", () => {
  assert.deepEqual(parseValues("7" + " ".repeat(MAX_TEXT - 1), "cfg"), [7]);
  // an astral character is two UTF-16 units but one character: the list is at the cap, and a syntax error
  assert.throws(() => parseValues("\u{1F600}" + " ".repeat(MAX_TEXT - 1), "cfg"), (e) => e.kind === "syntax");
});
