// Latent Explorer math: safetensors parsing, linear RGB preview, channel maps, corrections and histograms.
// A browser copy of Latent Lab's Python core (core/formats.py, core/preview.py, core/correct_ops.py, core/render.py),
// kept equal by shared fixtures (tests/fixtures/explorer/) that both test suites check to 1/255 per channel.
// Pure ES module: no DOM, so Node's test runner imports it as it is. Data tables (formats, factors, colormap,
// node widget specs) come from latent_lab_data.json, written from Python by tools/make_web_data.py.

const DTYPE_BYTES = { F32: 4, F64: 8, F16: 2, BF16: 2 };
const LEGACY_SCALE = 0.18215; // ComfyUI's LoadLatent: files without latent_format_version_0 hold scaled SD1 values

export class LatentError extends Error {
  constructor(problem, fix = "") {
    super(fix ? `${problem} ${fix}` : problem);
    this.problem = problem;
    this.fix = fix;
  }
}

// ------------------------------------------------------------------------------------------------ files

export function parseSafetensors(buffer) {
  const bytes = buffer instanceof ArrayBuffer ? buffer : buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength);
  if (bytes.byteLength < 8) throw new LatentError("The file is too short to be safetensors.", "Pick a .latent file saved by ComfyUI's Save Latent.");
  const view = new DataView(bytes);
  const length = Number(view.getBigUint64(0, true));
  if (length <= 0 || 8 + length > bytes.byteLength || length > 16 * 1024 * 1024) {
    throw new LatentError("The file has no readable safetensors header.", "Pick a .latent file saved by ComfyUI's Save Latent.");
  }
  let header;
  try {
    header = JSON.parse(new TextDecoder().decode(new Uint8Array(bytes, 8, length)));
  } catch {
    throw new LatentError("The safetensors header is not valid JSON.", "The file is damaged or not a .latent file.");
  }
  const start = 8 + length;
  const tensors = {};
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    tensors[name] = { dtype: info.dtype, shape: info.shape, begin: start + info.data_offsets[0], end: start + info.data_offsets[1] };
  }
  return { tensors, metadata: header.__metadata__ ?? {}, bytes };
}

function decodeHalf(bits) {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}

export function tensorValues(file, name) {
  const info = file.tensors[name];
  const size = DTYPE_BYTES[info.dtype];
  if (!size) throw new LatentError(`The tensor '${name}' has dtype ${info.dtype}.`, "The Explorer reads F32, F16, BF16 and F64 latents.");
  const count = info.shape.reduce((a, b) => a * b, 1);
  if (info.end - info.begin !== count * size) throw new LatentError(`The tensor '${name}' has the wrong byte length.`, "The file is damaged.");
  const view = new DataView(file.bytes, info.begin, info.end - info.begin);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    if (info.dtype === "F32") out[i] = view.getFloat32(i * 4, true);
    else if (info.dtype === "F64") out[i] = view.getFloat64(i * 8, true);
    else if (info.dtype === "F16") out[i] = decodeHalf(view.getUint16(i * 2, true));
    else {
      const scratch = new DataView(new ArrayBuffer(4));
      scratch.setUint32(0, view.getUint16(i * 2, true) << 16, true);
      out[i] = scratch.getFloat32(0, true);
    }
  }
  return out;
}

/** A ComfyUI .latent file -> {shape [B, C, H, W], data Float32Array (raw values), legacy, metadata}. */
export function readLatent(buffer) {
  const file = parseSafetensors(buffer);
  if (!file.tensors.latent_tensor) {
    throw new LatentError("The file has no 'latent_tensor'.", "Pick a .latent file saved by ComfyUI's Save Latent.");
  }
  let shape = file.tensors.latent_tensor.shape.slice();
  if (shape.length === 3) shape = [1, ...shape];
  if (shape.length !== 4) {
    throw new LatentError(`The latent has ${shape.length} dimensions (${shape.join("×")}).`, "The Explorer shows image latents [batch, channels, height, width]; video latents are not supported.");
  }
  const data = tensorValues(file, "latent_tensor");
  const legacy = !("latent_format_version_0" in file.tensors);
  if (legacy) for (let i = 0; i < data.length; i++) data[i] = Math.fround(data[i] * (1 / LEGACY_SCALE));
  return { shape, data, legacy, metadata: file.metadata };
}

// ------------------------------------------------------------------------------------------------ formats

/** Formats with this channel count; the first is the Explorer's default guess. */
export function formatsFor(data, channels) {
  const order = ["sdxl", "sd15", "flux", "sd3"];
  return order.filter((key) => data.formats[key]?.channels === channels);
}

/** Raw latent -> RGB in [0, 1]: rgb = raw · weight + bias (weight [C][3]), as LatentFormat.rgb_affine. */
export function rgbAffine(format, factorName = "comfyui") {
  const factors = format.factor_sets[factorName];
  if (!factors) throw new LatentError(`The ${format.label} format has no '${factorName}' factors.`, `Choose one of: ${Object.keys(format.factor_sets).join(", ")}.`);
  const weight = factors.weights.map((row) => row.map((w) => Math.fround((w * format.scale) / 2)));
  const bias = [0, 1, 2].map((k) => {
    const sum = factors.weights.reduce((acc, row) => acc + row[k], 0);
    return Math.fround((factors.bias[k] + 1 - format.shift * format.scale * sum) / 2);
  });
  return { weight, bias };
}

/** The same map taking SCALED latents (raw = scaled / scale + shift), as correct.scaled_affine. */
export function scaledAffine(affine, format) {
  const weight = affine.weight.map((row) => row.map((w) => w / format.scale));
  const bias = [0, 1, 2].map((k) => affine.bias[k] + format.shift * affine.weight.reduce((acc, row) => acc + row[k], 0));
  return { weight, bias };
}

/** One batch item in scaled units: Float64Array [C * H * W]. */
export function itemScaled(latent, index, format) {
  const [, C, H, W] = latent.shape;
  const size = C * H * W;
  const out = new Float64Array(size);
  const offset = index * size;
  for (let i = 0; i < size; i++) out[i] = Math.fround((latent.data[offset + i] - format.shift) * format.scale);
  return out;
}

// ------------------------------------------------------------------------------------------------ corrections
// x: one item, Float64Array [C * N] in scaled units (N cells per channel). Every function returns a new array.

function channelMean(x, c, N) {
  let sum = 0;
  for (let i = c * N; i < (c + 1) * N; i++) sum += x[i];
  return sum / N;
}

export function lerp(x, corrected, strength) {
  if (strength === 0) return x;
  if (strength === 1) return corrected;
  return x.map((v, i) => v + (corrected[i] - v) * strength);
}

/** Subtract each channel's mean × its strength, then the item's mean × global (core.correct_ops.center). */
export function center(x, C, N, strengths, globalStrength) {
  const out = new Float64Array(x);
  for (let c = 0; c < C; c++) {
    const shift = channelMean(x, c, N) * strengths[c];
    for (let i = c * N; i < (c + 1) * N; i++) out[i] -= shift;
  }
  if (globalStrength) {
    let sum = 0;
    for (const v of out) sum += v;
    const shift = (sum / out.length) * globalStrength;
    for (let i = 0; i < out.length; i++) out[i] -= shift;
  }
  return out;
}

/** Values beyond ±threshold mapped onto [threshold, boundary] (core.correct_ops.soft_clamp, absolute limits). */
export function softClamp(x, C, N, threshold, boundary, mode = "pixel") {
  if (!(threshold >= 0 && threshold < boundary)) {
    throw new LatentError(`Soft clamp needs 0 ≤ threshold < boundary; got ${threshold} and ${boundary}.`, "Set the threshold below the boundary.");
  }
  let peak = 0;
  for (const v of x) peak = Math.max(peak, Math.abs(v));
  if (peak <= boundary) return new Float64Array(x);
  const top = new Float64Array(mode === "pixel" ? N : C).fill(-Infinity);
  const bottom = new Float64Array(top.length).fill(-Infinity);
  for (let c = 0; c < C; c++) {
    for (let n = 0; n < N; n++) {
      const v = x[c * N + n];
      const k = mode === "pixel" ? n : c;
      top[k] = Math.max(top[k], v);
      bottom[k] = Math.max(bottom[k], -v);
    }
  }
  const room = boundary - threshold;
  const out = new Float64Array(x.length);
  for (let c = 0; c < C; c++) {
    for (let n = 0; n < N; n++) {
      const i = c * N + n;
      const k = mode === "pixel" ? n : c;
      const v = x[i];
      if (v > threshold) out[i] = threshold + ((v - threshold) * room) / Math.max(Math.max(top[k], boundary) - threshold, 1e-12);
      else if (v < -threshold) out[i] = -threshold + ((v + threshold) * room) / Math.max(Math.max(bottom[k], boundary) - threshold, 1e-12);
      else out[i] = v;
    }
  }
  return out;
}

/** Scale the chosen channels by one factor so their max |x| equals the boundary (core.correct_ops.maximize); left
 * alone when that max is at most minPeak (core.correct_ops.MIN_PEAK), rather than blowing rounding noise up. */
export function maximize(x, C, N, boundary, channels, minPeak) {
  if (!channels.length) throw new LatentError("Maximize needs at least one channel.", "Tick a channel.");
  let peak = 0;
  for (const c of channels) for (let i = c * N; i < (c + 1) * N; i++) peak = Math.max(peak, Math.abs(x[i]));
  const factor = peak > minPeak ? boundary / peak : 1;
  const out = new Float64Array(x);
  for (const c of channels) for (let i = c * N; i < (c + 1) * N; i++) out[i] *= factor;
  return out;
}

/** Mean color of the unclamped linear preview: channel means · weight + bias. */
export function meanColor(x, C, N, affine) {
  const rgb = [...affine.bias];
  for (let c = 0; c < C; c++) {
    const mean = channelMean(x, c, N);
    for (let k = 0; k < 3; k++) rgb[k] += mean * affine.weight[c][k];
  }
  return rgb;
}

function symmetricPinv3(m) {
  // Jacobi eigen-decomposition of a symmetric 3×3 matrix, then V diag(1/λ) Vᵀ over the non-negligible λ.
  const a = m.map((row) => row.slice());
  const v = [[1, 0, 0], [0, 1, 0], [0, 0, 1]];
  for (let sweep = 0; sweep < 50; sweep++) {
    const off = a[0][1] ** 2 + a[0][2] ** 2 + a[1][2] ** 2;
    if (off < 1e-30) break;
    for (const [p, q] of [[0, 1], [0, 2], [1, 2]]) {
      if (Math.abs(a[p][q]) < 1e-300) continue;
      const theta = (a[q][q] - a[p][p]) / (2 * a[p][q]);
      const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
      const c = 1 / Math.sqrt(t * t + 1);
      const s = t * c;
      for (let k = 0; k < 3; k++) {
        const akp = a[k][p], akq = a[k][q];
        a[k][p] = c * akp - s * akq;
        a[k][q] = s * akp + c * akq;
      }
      for (let k = 0; k < 3; k++) {
        const apk = a[p][k], aqk = a[q][k];
        a[p][k] = c * apk - s * aqk;
        a[q][k] = s * apk + c * aqk;
      }
      for (let k = 0; k < 3; k++) {
        const vkp = v[k][p], vkq = v[k][q];
        v[k][p] = c * vkp - s * vkq;
        v[k][q] = s * vkp + c * vkq;
      }
    }
  }
  const eig = [a[0][0], a[1][1], a[2][2]];
  const largest = Math.max(...eig.map(Math.abs));
  const out = [[0, 0, 0], [0, 0, 0], [0, 0, 0]];
  for (let e = 0; e < 3; e++) {
    if (!(eig[e] > 1e-12 * largest)) continue;
    for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) out[i][j] += (v[i][e] * v[j][e]) / eig[e];
  }
  return out;
}

/** Least-norm offsets moving the preview's mean color to the target (core.correct_ops.balance_offsets). */
export function balanceOffsets(x, C, N, affine, target, channels, luma) {
  if (!channels.length) throw new LatentError("Color balance needs at least one channel.", "Tick a channel.");
  const current = meanColor(x, C, N, affine);
  const goal = target ?? Array(3).fill(luma[0] * current[0] + luma[1] * current[1] + luma[2] * current[2]);
  const delta = goal.map((g, k) => g - current[k]);
  const rows = channels.map((c) => affine.weight[c]); // [k][3]
  const gram = [0, 1, 2].map((i) => [0, 1, 2].map((j) => rows.reduce((acc, r) => acc + r[i] * r[j], 0)));
  const inverse = symmetricPinv3(gram);
  // pinv(R) = pinv(Rᵀ R) Rᵀ, so offsets = delta · pinv(Rᵀ R) · Rᵀ
  const projected = [0, 1, 2].map((j) => delta.reduce((acc, d, i) => acc + d * inverse[i][j], 0));
  const offsets = new Float64Array(C);
  channels.forEach((c, k) => { offsets[c] = rows[k].reduce((acc, w, j) => acc + w * projected[j], 0); });
  return offsets;
}

export function colorBalance(x, C, N, affine, target, channels, luma) {
  const offsets = balanceOffsets(x, C, N, affine, target, channels, luma);
  const out = new Float64Array(x);
  for (let c = 0; c < C; c++) for (let i = c * N; i < (c + 1) * N; i++) out[i] += offsets[c];
  return out;
}

export function parseColor(text) {
  const value = String(text).trim().toLowerCase();
  if (["neutral", "", "auto"].includes(value)) return null;
  const match = /^#?([0-9a-f]{6})$/.exec(value);
  if (!match) throw new LatentError(`Target color '${text}' is not understood.`, "Write 'neutral' or a hex color such as #808080.");
  return [0, 2, 4].map((i) => parseInt(match[1].slice(i, i + 2), 16) / 255);
}

/** The channels an operation picks by default for a format ("auto" in the nodes), as indices. */
export function defaultChannels(data, formatKey, operation, count) {
  const spec = data.correction_defaults[formatKey]?.channels?.[operation] ?? "all";
  if (spec === "all") return [...Array(count).keys()];
  return spec.split(",").map((s) => parseInt(s, 10)).filter((c) => c < count);
}

export function defaultSettings(data, formatKey, channels) {
  const boundary = data.correction_defaults[formatKey]?.boundary ?? data.default_boundary;
  return {
    format: formatKey,
    factors: "comfyui",
    item: 0,
    mapScale: "shared",
    center: { enabled: false, channels: defaultChannels(data, formatKey, "center", channels), channelStrength: 1, globalStrength: 1 },
    clamp: { enabled: false, threshold: 3.5, boundary, mode: "pixel", strength: 1 },
    maximize: { enabled: false, channels: defaultChannels(data, formatKey, "maximize", channels), boundary, strength: 1 },
    balance: { enabled: false, target: "neutral", channels: defaultChannels(data, formatKey, "color_balance", channels), strength: 1 },
  };
}

/** The node chain in order: center, soft clamp, maximize, color balance (each as its Latent Lab node does it). */
export function applyCorrections(x, C, N, settings, data, affineScaled) {
  let out = x;
  const s = settings;
  if (s.center.enabled) {
    const strengths = Array.from({ length: C }, (_, c) => (s.center.channels.includes(c) ? s.center.channelStrength : 0));
    out = center(out, C, N, strengths, s.center.globalStrength);
  }
  if (s.clamp.enabled) out = lerp(out, softClamp(out, C, N, s.clamp.threshold, s.clamp.boundary, s.clamp.mode), s.clamp.strength);
  if (s.maximize.enabled) out = lerp(out, maximize(out, C, N, s.maximize.boundary, s.maximize.channels, data.min_peak), s.maximize.strength);
  if (s.balance.enabled) {
    const balanced = colorBalance(out, C, N, affineScaled, parseColor(s.balance.target), s.balance.channels, data.rec709_luma);
    out = lerp(out, balanced, s.balance.strength);
  }
  return out;
}

// ------------------------------------------------------------------------------------------------ pictures

function toByte(v) {
  return Math.round(Math.min(Math.max(v, 0), 1) * 255);
}

/** Linear RGB preview at latent size: RGBA bytes [H * W * 4]. */
export function previewRGBA(x, C, H, W, affineScaled) {
  const N = H * W;
  const out = new Uint8ClampedArray(N * 4);
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < 3; k++) {
      let v = affineScaled.bias[k];
      for (let c = 0; c < C; c++) v += x[c * N + n] * affineScaled.weight[c][k];
      out[n * 4 + k] = toByte(v);
    }
    out[n * 4 + 3] = 255;
  }
  return out;
}

/** Half-widths of the maps' color range: one for every channel (shared) or one per channel. */
export function mapBounds(x, C, N, mode = "shared") {
  const peaks = Array.from({ length: C }, (_, c) => {
    let peak = 0;
    for (let i = c * N; i < (c + 1) * N; i++) peak = Math.max(peak, Math.abs(x[i]));
    return Math.max(peak, 1e-8);
  });
  if (mode === "per_channel") return peaks;
  const shared = Math.max(...peaks);
  return peaks.map(() => shared);
}

export function diverging(value, anchors) {
  const position = ((Math.min(Math.max(value, -1), 1) + 1) / 2) * (anchors.length - 1);
  const low = Math.min(Math.floor(position), anchors.length - 2);
  const frac = position - low;
  return [0, 1, 2].map((k) => anchors[low][k] * (1 - frac) + anchors[low + 1][k] * frac);
}

/** One channel's map at latent size: RGBA bytes, blue −, gray 0, red +. */
export function mapRGBA(x, channel, N, bound, anchors) {
  const out = new Uint8ClampedArray(N * 4);
  for (let n = 0; n < N; n++) {
    const rgb = diverging(x[channel * N + n] / bound, anchors);
    out[n * 4] = toByte(rgb[0]);
    out[n * 4 + 1] = toByte(rgb[1]);
    out[n * 4 + 2] = toByte(rgb[2]);
    out[n * 4 + 3] = 255;
  }
  return out;
}

export function valueRange(...arrays) {
  let lo = Infinity, hi = -Infinity;
  for (const a of arrays) for (const v of a) { if (v < lo) lo = v; if (v > hi) hi = v; }
  if (!(hi > lo)) { lo -= 0.5; hi += 0.5; }
  return [lo, hi];
}

/** Per-channel counts over `bins` equal bins from lo to hi, the last bin closed (numpy.histogram). */
export function histograms(x, C, N, bins, lo, hi) {
  const counts = Array.from({ length: C }, () => new Array(bins).fill(0));
  const width = (hi - lo) / bins;
  for (let c = 0; c < C; c++) {
    for (let i = c * N; i < (c + 1) * N; i++) {
      const v = x[i];
      if (!(v >= lo && v <= hi)) continue;
      const bin = v === hi ? bins - 1 : Math.min(Math.floor((v - lo) / width), bins - 1);
      counts[c][bin] += 1;
    }
  }
  return counts;
}

export function channelStats(x, C, N) {
  return Array.from({ length: C }, (_, c) => {
    let sum = 0, sq = 0, min = Infinity, max = -Infinity;
    for (let i = c * N; i < (c + 1) * N; i++) {
      const v = x[i];
      sum += v; sq += v * v;
      if (v < min) min = v;
      if (v > max) max = v;
    }
    const mean = sum / N;
    return { mean, std: Math.sqrt(Math.max(sq / N - mean * mean, 0)), min, max };
  });
}

// ------------------------------------------------------------------------------------------------ export

export function channelList(channels, count) {
  const sorted = [...new Set(channels)].sort((a, b) => a - b);
  return sorted.length === count ? "all" : sorted.join(",");
}

function widgetValues(spec, values) {
  return spec.widgets.map((w) => {
    const value = w.name in values ? values[w.name] : w.default;
    if (w.type === "FLOAT" || w.type === "INT") return Math.min(Math.max(value, w.min ?? -Infinity), w.max ?? Infinity);
    return value;
  });
}

/** The enabled corrections as Latent Lab nodes, linked in a chain: ComfyUI's clipboard format (Ctrl+V). */
export function exportNodes(settings, data, channelCount) {
  const s = settings;
  const common = { format: s.format };
  const chain = [];
  if (s.center.enabled) chain.push(["LatentLabCenter", { ...common, channels: channelList(s.center.channels, channelCount), channel_strength: s.center.channelStrength, global_strength: s.center.globalStrength }]);
  if (s.clamp.enabled) chain.push(["LatentLabSoftClamp", { ...common, threshold: s.clamp.threshold, boundary: s.clamp.boundary, mode: s.clamp.mode, strength: s.clamp.strength }]);
  if (s.maximize.enabled) chain.push(["LatentLabMaximize", { ...common, channels: channelList(s.maximize.channels, channelCount), boundary: s.maximize.boundary, strength: s.maximize.strength }]);
  if (s.balance.enabled) chain.push(["LatentLabColorBalance", { ...common, factors: s.factors, target: s.balance.target, channels: channelList(s.balance.channels, channelCount), strength: s.balance.strength }]);
  chain.push(["LatentLabRGBPreview", { ...common, factors: s.factors }]);
  const nodes = [];
  const links = [];
  chain.forEach(([type, values], index) => {
    const spec = data.nodes[type];
    if (!spec) throw new LatentError(`This Latent Lab has no ${type} node.`, "Update the Explorer's data (tools/make_web_data.py).");
    const id = index + 1;
    const node = {
      id, type, pos: [index * 340, 0], size: [315, type === "LatentLabRGBPreview" ? 270 : 150], flags: {}, order: index, mode: 0,
      inputs: spec.inputs.map((i) => ({ name: i.name, type: i.type, link: null })),
      outputs: spec.outputs.map((o, slot) => ({ name: o.name, type: o.type, links: [], slot_index: slot })),
      properties: { "Node name for S&R": type },
      widgets_values: widgetValues(spec, values),
    };
    if (index > 0) {
      const from = nodes[index - 1];
      const linkId = index;
      links.push({ id: linkId, origin_id: from.id, origin_slot: 0, target_id: id, target_slot: 0, type: "LATENT" });
      from.outputs[0].links.push(linkId);
      node.inputs[0].link = linkId;
    }
    nodes.push(node);
  });
  return { nodes, links, groups: [], reroutes: [], subgraphs: [] };
}
