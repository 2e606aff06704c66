// The sweep value-list grammar of core/sweep_grammar.py, for the browser (live preview on the sweep node).
// Kept equal to Python by tests/vectors/sweep_grammar.json, which both test suites read.
// A plain ES module without side effects: ComfyUI loads every .js under js/, and loading this one does nothing.
//
//   list   := item ("," item)*
//   item   := number | number "-" number | number "-" number "[" n "]" | number "-" number "(" [+|-] step ")"
//   number := digits ["." digits] | "." digits      (ASCII digits, no sign, no exponent)
// Seed lists take integers only (BigInt here: seeds reach 2^64 - 1), and also "+N" for the whole list.
// Items are read by one left-to-right scan, as in Python (no backtracking regular expression).

export const CFG_RANGE = [0, 100];
export const SEED_MAX = 0xffffffffffffffffn;
export const MAX_VALUES = 1024;
export const MAX_TEXT = 32768;
const DECIMALS = 10;
const ON_GRID = 1e-9;
const AXIS = { cfg: "CFG", seed: "seed", guidance: "guidance" };

const NUMBER = /^(?:\d+(?:\.\d*)?|\.\d+)$/;
const DIGITS = /^\d+$/;
const SPECIAL = "-[]()";
// What either Python's str.strip() or JavaScript's trim() drops (WHITESPACE in Python), so both trim alike.
const WHITESPACE = new Set("\t\n\v\f\r \x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006" +
  "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff");

/** The text without WHITESPACE at either end (a loop: a trimming regular expression can take quadratic time). */
export function strip(text) {
  let start = 0;
  let end = text.length;
  while (start < end && WHITESPACE.has(text[start])) start++;
  while (end > start && WHITESPACE.has(text[end - 1])) end--;
  return text.slice(start, end);
}

function codePoints(text) {
  if (text.length > 2 * MAX_TEXT) return text.length;  // more code points than MAX_TEXT either way
  let count = 0;
  for (const _ of text) count++;
  return count;
}

export class SweepGrammarError extends Error {
  constructor(kind, problem, fix = "") {
    super(fix ? `${problem} ${fix}` : problem);
    this.kind = kind;
    this.problem = problem;
    this.fix = fix;
  }
}

function round10(value) {
  if (!Number.isFinite(value)) return value;
  return Number(value.toFixed(DECIMALS));
}

export function formatNumber(value) {
  if (typeof value === "bigint") return value.toString();
  const text = round10(value).toFixed(DECIMALS).replace(/0+$/, "").replace(/\.$/, "");
  return text === "" || text === "-0" ? "0" : text;
}

/** Text for a message: trimmed, and cut to its start and end around an ellipsis when longer than `most`. */
export function excerpt(text, most = 40) {
  text = strip(String(text));
  if (text.length <= most) return text;
  const tail = Math.floor(most / 4);
  return `${text.slice(0, most - tail - 1)}…${text.slice(-tail)}`;
}

function example(kind) {
  return kind === "seed"
    ? "Write seeds like '1, 5, 9', '100-103', or '+4' (the seed and the next 3)."
    : "Write values like '3, 5.5, 7', '2-12 [6]' (6 values) or '2-12 (+2)' (step 2).";
}

function checkCount(count, name) {
  if (count > MAX_VALUES) throw new SweepGrammarError("too_many", `The ${name} list has more than ${MAX_VALUES} values.`, "Use a larger step or a smaller count.");
}

function bounded(value, kind, where, text = "") {
  const shown = text ? excerpt(text, 24) : null;
  if (kind !== "seed") {
    const name = AXIS[kind];
    if (!Number.isFinite(value)) throw new SweepGrammarError("non_finite", `A ${name} value (${where}) is not finite.`, `Use ${name} values between 0 and 100.`);
    if (value < CFG_RANGE[0] || value > CFG_RANGE[1]) {
      throw new SweepGrammarError("range", `${name} ${shown ?? formatNumber(value)} (${where}) is outside 0..100.`, `Use ${name} values between 0 and 100.`);
    }
  } else if (value < 0n || value > SEED_MAX) {
    throw new SweepGrammarError("range", `Seed ${shown ?? value} (${where}) is outside 0..${SEED_MAX}.`, "Use seeds between 0 and 18446744073709551615.");
  }
  return value;
}

function number(text, kind, shown, where) {
  text = strip(text);
  if (!NUMBER.test(text)) {
    const hint = text.startsWith("-") ? "Negative values are not allowed. " : "";
    const inside = shown ? ` in '${shown}'` : "";
    throw new SweepGrammarError("syntax", `'${excerpt(text, 20)}'${inside} (${where}) is not a number.`, hint + example(kind));
  }
  if (kind === "seed") {
    if (!DIGITS.test(text)) throw new SweepGrammarError("not_integer", `Seed '${excerpt(text, 20)}' (${where}) is not a whole number.`, "Seeds are whole numbers like 42.");
    return bounded(BigInt(text), kind, where, text);
  }
  return bounded(round10(parseFloat(text)), kind, where, text);
}

function countRange(a, b, countText, kind, shown, where) {
  countText = strip(countText);
  if (!DIGITS.test(countText) || Number(countText) < 2) {
    throw new SweepGrammarError("count", `The count [${excerpt(countText, 20)}] in '${shown}' (${where}) must be a whole number of at least 2.`, "Example: '2-12 [6]' gives 6 values from 2 to 12.");
  }
  const count = Number(countText);
  checkCount(count, AXIS[kind]);
  if (kind === "seed") {
    const n = BigInt(count - 1);
    // Python's % is a floor modulo; a remainder of 0 is the same either way.
    if ((b - a) % n !== 0n) {
      throw new SweepGrammarError("not_integer", `'${shown}' (${where}) does not split into ${count} whole seeds.`, "Pick a count where (end - start) / (count - 1) is whole, or use a step.");
    }
    const step = floorDiv(b - a, n);
    return Array.from({ length: count }, (_, i) => a + BigInt(i) * step);
  }
  const spacing = (b - a) / (count - 1);
  return [...Array.from({ length: count - 1 }, (_, i) => round10(a + i * spacing)), b];
}

function floorDiv(x, y) {
  const q = x / y;
  return (x % y !== 0n && (x < 0n) !== (y < 0n)) ? q - 1n : q;
}

/** [sign, number] of a step's inside: an optional + or -, then one word. */
export function splitStep(text) {
  text = strip(text);
  const sign = text[0] === "+" || text[0] === "-" ? text[0] : "";
  return [sign, strip(text.slice(sign.length))];
}

function parseStep(text, kind, shown, where) {
  const [sign, digits] = splitStep(text);
  if (!NUMBER.test(digits)) {
    throw new SweepGrammarError("syntax", `The step (${excerpt(text, 20)}) in '${shown}' (${where}) is not a number.`, "Write steps like (+2) or (-0.5).");
  }
  let value;
  if (kind === "seed") {
    if (!DIGITS.test(digits)) throw new SweepGrammarError("not_integer", `The seed step (${excerpt(text, 20)}) (${where}) is not whole.`, "Seed steps are whole numbers like (+10).");
    value = BigInt(digits);
  } else {
    value = round10(parseFloat(digits));
    if (!Number.isFinite(value)) throw new SweepGrammarError("non_finite", `The step (${excerpt(text, 20)}) (${where}) is not finite.`, "Write steps like (+2) or (-0.5).");
  }
  return sign === "-" ? -value : value;
}

function stepRange(a, b, stepText, kind, shown, where) {
  const one = kind === "seed" ? 1n : 1;
  const step = stepText === null ? (b >= a ? one : -one) : parseStep(stepText, kind, shown, where);
  if (a === b) return [a];
  if (step === 0 || step === 0n) {
    throw new SweepGrammarError("zero_step", `The step in '${shown}' (${where}) is zero.`, "Use a step like (+0.5), or a count like [5].");
  }
  const zero = kind === "seed" ? 0n : 0;
  if ((b > a && step < zero) || (b < a && step > zero)) {
    const sign = b > a ? "+" : "-";
    const magnitude = step < zero ? -step : step;
    throw new SweepGrammarError("step_direction", `The step in '${shown}' (${where}) points away from the range's end.`,
      `Going from ${formatNumber(a)} to ${formatNumber(b)} needs a step with sign ${sign}, like (${sign}${excerpt(formatNumber(magnitude), 24)}).`);
  }
  if (kind === "seed") {
    const count = floorDiv(b - a, step) + 1n;
    checkCount(Number(count), AXIS[kind]);
    return Array.from({ length: Number(count) }, (_, i) => a + BigInt(i) * step);
  }
  const count = Math.floor((b - a) / step + ON_GRID) + 1;
  checkCount(count, AXIS[kind]);
  return Array.from({ length: count }, (_, i) => round10(a + i * step));
}

function firstOf(text, characters, start) {
  let first = text.length;
  for (const c of characters) {
    const i = text.indexOf(c, start);
    if (i >= 0 && i < first) first = i;
  }
  return first;
}

/** [start, end, count, step] texts of one item, untrimmed (null where absent), or null when its dashes and
 *  brackets do not fit the grammar: the same single scan as split_item in Python. */
export function splitItem(item) {
  const dash = firstOf(item, SPECIAL, 0);
  if (dash === item.length) return [item, null, null, null];
  if (item[dash] !== "-") return null;
  const opener = firstOf(item, SPECIAL, dash + 1);
  const start = item.slice(0, dash);
  const end = item.slice(dash + 1, opener);
  if (opener === item.length) return [start, end, null, null];
  const closer = { "[": "]", "(": ")" }[item[opener]];
  const close = closer ? item.indexOf(closer, opener + 1) : -1;
  if (close < 0 || strip(item.slice(close + 1))) return null;
  const inside = item.slice(opener + 1, close);
  return closer === "]" ? [start, end, inside, null] : [start, end, null, inside];
}

function expand(item, kind, position) {
  const where = `item ${position} of the ${AXIS[kind]} list`;
  const stripped = strip(item);
  const shown = excerpt(stripped);
  if (kind === "seed" && stripped.startsWith("+")) {
    throw new SweepGrammarError("relative", `'${shown}' (${where}): '+N' must be the whole seed list.`, "Write '+4' alone, or list the seeds: '1, 5, 9' or '100-103'.");
  }
  if (!stripped) throw new SweepGrammarError("syntax", `Item ${position} of the ${AXIS[kind]} list is empty (two commas in a row, or a comma at an end).`, "Remove the extra comma.");
  if (stripped.startsWith("-")) throw new SweepGrammarError("syntax", `'${shown}' (${where}) is negative.`, "Negative values are not allowed. " + example(kind));
  const parts = splitItem(item);
  if (!parts) throw new SweepGrammarError("syntax", `Cannot read '${shown}' (${where}).`, example(kind));
  const [start, end, count, step] = parts;
  if (end === null) return [number(start, kind, "", where)];
  const a = number(start, kind, shown, where);
  const b = number(end, kind, shown, where);
  if (count !== null) return countRange(a, b, count, kind, shown, where);
  return stepRange(a, b, step, kind, shown, where);
}

function relativeSeeds(countText, kind, baseSeed) {
  if (kind !== "seed") throw new SweepGrammarError("syntax", "'+N' is only for seed lists.", example(kind));
  if (!DIGITS.test(countText) || Number(countText) < 1) {
    throw new SweepGrammarError("count", `'+${excerpt(countText, 20)}' needs a whole number of seeds, at least 1.`, "Example: '+4' is the seed and the next 3.");
  }
  const count = Number(countText);
  checkCount(count, "seed");
  const base = BigInt(baseSeed);
  bounded(base, "seed", "base seed");
  bounded(base + BigInt(count) - 1n, "seed", `'+${count}' list`);
  return Array.from({ length: count }, (_, i) => base + BigInt(i));
}

/** The values a list stands for: Numbers for CFG, BigInts for seeds. Throws SweepGrammarError. */
export function parseValues(text, kind = "cfg", baseSeed = 0) {
  if (!(kind in AXIS)) throw new TypeError(`kind must be cfg, seed or guidance, got ${kind}`);
  const name = AXIS[kind];
  if (typeof text !== "string" || !strip(text)) throw new SweepGrammarError("empty", `The ${name} list is empty.`, example(kind));
  const length = codePoints(text);
  if (length > MAX_TEXT) {
    throw new SweepGrammarError("too_long", `The ${name} list is ${length.toLocaleString("en-US")} characters long, more than ${MAX_TEXT.toLocaleString("en-US")}.`, "Write long runs as ranges, like '2-12 [6]' or '100-199'.");
  }
  const stripped = strip(text);
  let values;
  if (stripped.startsWith("+") && !stripped.includes(",")) {
    values = relativeSeeds(strip(stripped.slice(1)), kind, baseSeed);
  } else {
    values = [];
    text.split(",").forEach((item, index) => {
      values.push(...expand(item, kind, index + 1));
      checkCount(values.length, name);
    });
  }
  const seen = new Set();
  for (const value of values) {
    const key = String(value);
    if (seen.has(key)) throw new SweepGrammarError("duplicate", `${name} ${formatNumber(value)} appears twice in the list.`, "Each value may appear once (ranges that share an end repeat it).");
    seen.add(key);
  }
  return values;
}

/** What the sweep node will run: {cfg, seeds, guidance, cells} or {error} (the first problem found); guidance
 *  is null without a guidance list. */
export function sweepPreview(cfgText, seedsText, seed, maxCells = Infinity, guidanceText = "") {
  try {
    const cfg = parseValues(cfgText, "cfg");
    const seeds = seedsText && strip(seedsText) ? parseValues(seedsText, "seed", BigInt(Math.max(0, Math.trunc(Number(seed) || 0)))) : null;
    const guidance = guidanceText && strip(guidanceText) ? parseValues(guidanceText, "guidance") : null;
    const cells = cfg.length * (seeds ? seeds.length : 1) * (guidance ? guidance.length : 1);
    return { cfg, seeds, guidance, cells, tooMany: cells > maxCells };
  } catch (error) {
    if (error instanceof SweepGrammarError) return { error };
    throw error;
  }
}

/** Short text for a list of values: all of them when few, else the first and last ones. */
export function shortList(values, most = 12) {
  const shown = values.map(formatNumber);
  if (shown.length <= most) return shown.join(", ");
  return [...shown.slice(0, most - 3), "…", ...shown.slice(-2)].join(", ");
}
