// The sweep value-list grammar of core/sweep_grammar.py, for the browser (live preview on the sweep node).
// Kept equal to Python by tests/vectors/sweep_grammar.json, which both test suites read.
// A plain ES module without side effects: ComfyUI loads every .js under js/, and loading this one does nothing.
//
//   list   := item ("," item)*
//   item   := number | number "-" number | number "-" number "[" n "]" | number "-" number "(" [+|-] step ")"
//   number := digits ["." digits] | "." digits      (no sign, no exponent)
// Seed lists take integers only (BigInt here: seeds reach 2^64 - 1), and also "+N" for the whole list.

export const CFG_RANGE = [0, 100];
export const SEED_MAX = 0xffffffffffffffffn;
export const MAX_VALUES = 1024;
const DECIMALS = 10;
const ON_GRID = 1e-9;
const AXIS = { cfg: "CFG", seed: "seed" };

const NUMBER = /^(?:\d+(?:\.\d*)?|\.\d+)$/;
const ITEM = /^\s*(?<a>[^-[\]()]*?)\s*(?:-\s*(?<b>[^-[\]()]*?)\s*(?:\[(?<count>[^\]]*)\]|\((?<step>[^)]*)\))?\s*)?$/;
const RELATIVE = /^\s*\+\s*(?<n>[^,]*?)\s*$/;
const STEP = /^\s*(?<sign>[+-]?)\s*(?<number>\S*)\s*$/;
const DIGITS = /^\d+$/;

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

function example(kind) {
  return kind === "seed"
    ? "Write seeds like '1, 5, 9', '100-103', or '+4' (the seed and the next 3)."
    : "Write values like '3, 5.5, 7', '2-12 [6]' (6 values) or '2-12 (+2)' (step 2).";
}

function checkCount(count, name) {
  if (count > MAX_VALUES) throw new SweepGrammarError("too_many", `The ${name} list has more than ${MAX_VALUES} values.`, "Use a larger step or a smaller count.");
}

function bounded(value, kind, where) {
  if (kind === "cfg") {
    if (!Number.isFinite(value)) throw new SweepGrammarError("non_finite", `A CFG value (${where}) is not finite.`, "Use CFG values between 0 and 100.");
    if (value < CFG_RANGE[0] || value > CFG_RANGE[1]) {
      throw new SweepGrammarError("range", `CFG ${formatNumber(value)} (${where}) is outside 0..100.`, "Use CFG values between 0 and 100.");
    }
  } else if (value < 0n || value > SEED_MAX) {
    throw new SweepGrammarError("range", `Seed ${value} (${where}) is outside 0..${SEED_MAX}.`, "Use seeds between 0 and 18446744073709551615.");
  }
  return value;
}

function number(text, kind, item, where) {
  text = text.trim();
  if (!NUMBER.test(text)) {
    const hint = text.startsWith("-") ? "Negative values are not allowed. " : "";
    throw new SweepGrammarError("syntax", `'${text}' in '${item.trim()}' (${where}) is not a number.`, hint + example(kind));
  }
  if (kind === "seed") {
    if (!DIGITS.test(text)) throw new SweepGrammarError("not_integer", `Seed '${text}' (${where}) is not a whole number.`, "Seeds are whole numbers like 42.");
    return bounded(BigInt(text), kind, where);
  }
  return bounded(round10(parseFloat(text)), kind, where);
}

function countRange(a, b, countText, kind, item, where) {
  countText = countText.trim();
  if (!DIGITS.test(countText) || Number(countText) < 2) {
    throw new SweepGrammarError("count", `The count [${countText}] in '${item.trim()}' (${where}) must be a whole number of at least 2.`, "Example: '2-12 [6]' gives 6 values from 2 to 12.");
  }
  const count = Number(countText);
  checkCount(count, AXIS[kind]);
  if (kind === "seed") {
    const n = BigInt(count - 1);
    // Python's % is a floor modulo; a remainder of 0 is the same either way.
    if ((b - a) % n !== 0n) {
      throw new SweepGrammarError("not_integer", `'${item.trim()}' (${where}) does not split into ${count} whole seeds.`, "Pick a count where (end - start) / (count - 1) is whole, or use a step.");
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

function parseStep(text, kind, item, where) {
  const match = STEP.exec(text);
  const digits = match ? match.groups.number : "";
  if (!digits || !NUMBER.test(digits)) {
    throw new SweepGrammarError("syntax", `The step (${text.trim()}) in '${item.trim()}' (${where}) is not a number.`, "Write steps like (+2) or (-0.5).");
  }
  let value;
  if (kind === "seed") {
    if (!DIGITS.test(digits)) throw new SweepGrammarError("not_integer", `The seed step (${text.trim()}) (${where}) is not whole.`, "Seed steps are whole numbers like (+10).");
    value = BigInt(digits);
  } else {
    value = round10(parseFloat(digits));
    if (!Number.isFinite(value)) throw new SweepGrammarError("non_finite", `The step (${text.trim()}) (${where}) is not finite.`, "Write steps like (+2) or (-0.5).");
  }
  return match.groups.sign === "-" ? -value : value;
}

function stepRange(a, b, stepText, kind, item, where) {
  const one = kind === "seed" ? 1n : 1;
  const step = stepText === undefined ? (b >= a ? one : -one) : parseStep(stepText, kind, item, where);
  if (a === b) return [a];
  if (step === 0 || step === 0n) {
    throw new SweepGrammarError("zero_step", `The step in '${item.trim()}' (${where}) is zero.`, "Use a step like (+0.5), or a count like [5].");
  }
  const zero = kind === "seed" ? 0n : 0;
  if ((b > a && step < zero) || (b < a && step > zero)) {
    const sign = b > a ? "+" : "-";
    const magnitude = step < zero ? -step : step;
    throw new SweepGrammarError("step_direction", `The step in '${item.trim()}' (${where}) points away from the range's end.`,
      `Going from ${formatNumber(a)} to ${formatNumber(b)} needs a step with sign ${sign}, like (${sign}${formatNumber(magnitude)}).`);
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

function expand(item, kind, position) {
  const where = `item ${position} of the ${AXIS[kind]} list`;
  const stripped = item.trim();
  if (kind === "seed" && stripped.startsWith("+")) {
    throw new SweepGrammarError("relative", `'${stripped}' (${where}): '+N' must be the whole seed list.`, "Write '+4' alone, or list the seeds: '1, 5, 9' or '100-103'.");
  }
  if (!stripped) throw new SweepGrammarError("syntax", `Item ${position} of the ${AXIS[kind]} list is empty (two commas in a row, or a comma at an end).`, "Remove the extra comma.");
  if (stripped.startsWith("-")) throw new SweepGrammarError("syntax", `'${stripped}' (${where}) is negative.`, "Negative values are not allowed. " + example(kind));
  const match = ITEM.exec(item);
  if (!match) throw new SweepGrammarError("syntax", `Cannot read '${stripped}' (${where}).`, example(kind));
  const a = number(match.groups.a, kind, item, where);
  if (match.groups.b === undefined) return [a];
  const b = number(match.groups.b, kind, item, where);
  if (match.groups.count !== undefined) return countRange(a, b, match.groups.count, kind, item, where);
  return stepRange(a, b, match.groups.step, kind, item, where);
}

function relativeSeeds(countText, kind, baseSeed) {
  if (kind !== "seed") throw new SweepGrammarError("syntax", "'+N' is only for seed lists.", example(kind));
  if (!DIGITS.test(countText) || Number(countText) < 1) {
    throw new SweepGrammarError("count", `'+${countText}' needs a whole number of seeds, at least 1.`, "Example: '+4' is the seed and the next 3.");
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
  if (!(kind in AXIS)) throw new TypeError(`kind must be cfg or seed, got ${kind}`);
  const name = AXIS[kind];
  if (typeof text !== "string" || !text.trim()) throw new SweepGrammarError("empty", `The ${name} list is empty.`, example(kind));
  const relative = RELATIVE.exec(text);
  let values;
  if (relative) {
    values = relativeSeeds(relative.groups.n, kind, baseSeed);
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

/** What the sweep node will run: {cfg, seeds, cells} or {error} (the first problem found). */
export function sweepPreview(cfgText, seedsText, seed, maxCells = Infinity) {
  try {
    const cfg = parseValues(cfgText, "cfg");
    const seeds = seedsText && seedsText.trim() ? parseValues(seedsText, "seed", BigInt(Math.max(0, Math.trunc(Number(seed) || 0)))) : null;
    const cells = cfg.length * (seeds ? seeds.length : 1);
    return { cfg, seeds, cells, tooMany: cells > maxCells };
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
