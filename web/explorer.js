// Latent Explorer page: lists .latent files (ComfyUI's output and input folders), loads one (list, drop, or
// ?type=&subfolder=&filename= / ?src=), and shows its preview, channel maps and histograms live as corrections
// change. The math is latent_core.js; the Python core checks the same fixtures.
import * as core from "./latent_core.js";

const PALETTE = ["#e6e6e6", "#e65050", "#5ac85a", "#5a8cf0", "#f0c83c", "#c85adc", "#3cd2d2", "#fa963c"];
const $ = (selector) => document.querySelector(selector);

const state = { data: null, latent: null, key: null, settings: null };
window.latentExplorer = state; // for tests and the curious: the loaded latent and its settings

function say(text, kind = "error") {
  const box = $("#message");
  box.hidden = !text;
  box.textContent = text ?? "";
  box.className = kind;
}

function formatBytes(n) {
  return n < 1024 ? `${n} B` : n < 2 ** 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 2 ** 20).toFixed(1)} MiB`;
}

// ------------------------------------------------------------------------------------------------ files

async function refreshList() {
  const list = $("#file-list");
  const note = $("#list-note");
  list.replaceChildren();
  let answer;
  try {
    const response = await fetch("api/latents", { cache: "no-store" });
    answer = await response.json();
    if (!response.ok) throw new Error(answer.error ?? response.statusText);
  } catch {
    note.textContent = "No ComfyUI server answers here, so no folder list: drop a file instead.";
    return;
  }
  note.textContent = answer.files.length
    ? `${answer.files.length} file${answer.files.length === 1 ? "" : "s"}, newest first.`
    : "No .latent files yet. Save one with ComfyUI's Save Latent node (it writes to output/latents/).";
  for (const entry of answer.files) {
    const item = document.createElement("li");
    const path = entry.subfolder ? `${entry.subfolder}/${entry.filename}` : entry.filename;
    item.dataset.key = `${entry.type}:${path}`;
    const shape = entry.shape ? entry.shape.join("×") : "unreadable header";
    item.innerHTML = `<span class="name"></span><span class="meta"></span>`;
    item.querySelector(".name").textContent = path;
    item.querySelector(".meta").textContent = `${entry.type} · ${shape} · ${entry.dtype ?? ""} · ${formatBytes(entry.size)}`;
    if (entry.too_large) {
      item.classList.add("disabled");
      item.title = `Larger than the Explorer's cap of ${formatBytes(answer.max_bytes)}.`;
    } else {
      item.addEventListener("click", () => openListed(entry));
    }
    list.append(item);
  }
  markCurrent();
}

function markCurrent() {
  for (const item of document.querySelectorAll("#file-list li")) item.classList.toggle("current", item.dataset.key === state.key);
}

async function openListed(entry) {
  const query = new URLSearchParams({ type: entry.type, subfolder: entry.subfolder ?? "", filename: entry.filename });
  const path = entry.subfolder ? `${entry.subfolder}/${entry.filename}` : entry.filename;
  await openUrl(`api/latent?${query}`, `${entry.type}/${path}`, `${entry.type}:${path}`);
  history.replaceState(null, "", `?${query}`);
}

async function openUrl(url, name, key = null) {
  say("Loading…", "info");
  try {
    const response = await fetch(url, { cache: "no-store" });
    if (!response.ok) {
      let problem = `${response.status} ${response.statusText}`;
      try {
        const body = await response.json();
        problem = [body.error, body.fix].filter(Boolean).join(" ");
      } catch { /* not JSON */ }
      throw new core.LatentError(`Could not load ${name}: ${problem}`);
    }
    show(await response.arrayBuffer(), name, key);
  } catch (error) {
    say(error.message);
  }
}

async function openFile(file) {
  if (!file) return;
  const cap = state.data.max_bytes;
  if (!file.name.toLowerCase().endsWith(".latent")) {
    say(`'${file.name}' is not a .latent file. Save a latent with ComfyUI's Save Latent node and drop that file.`);
    return;
  }
  if (file.size > cap) {
    say(`'${file.name}' is ${formatBytes(file.size)}; the Explorer reads files up to ${formatBytes(cap)}.`);
    return;
  }
  show(await file.arrayBuffer(), file.name, null);
}

function show(buffer, name, key) {
  try {
    const latent = core.readLatent(buffer);
    const formats = core.formatsFor(state.data, latent.shape[1]);
    if (!formats.length) {
      throw new core.LatentError(`No known latent format has ${latent.shape[1]} channels.`, "The Explorer knows SD1.x/SDXL (4 channels) and SD3/Flux (16).");
    }
    state.latent = latent;
    state.key = key;
    const keep = state.settings && state.data.formats[state.settings.format].channels === latent.shape[1];
    state.settings = keep ? { ...state.settings, item: 0 } : core.defaultSettings(state.data, formats[0], latent.shape[1]);
    say("");
    buildFormatControls();
    syncControls();
    render();
    markCurrent();
    const [B, C, H, W] = latent.shape;
    $("#file-info").textContent = `${name} · ${B}×${C}×${H}×${W} (≈${W * 8}×${H * 8} px)` +
      (latent.legacy ? " · old scaled format, converted as ComfyUI's Load Latent does" : "");
  } catch (error) {
    say(error.message);
  }
}

// ------------------------------------------------------------------------------------------------ controls

function option(value, text) {
  const element = document.createElement("option");
  element.value = value;
  element.textContent = text;
  return element;
}

function buildFormatControls() {
  const { data, latent, settings } = state;
  const [B, C] = latent.shape;
  $("#format").replaceChildren(...core.formatsFor(data, C).map((k) => option(k, `${data.formats[k].label} (${k})`)));
  $("#item").replaceChildren(...Array.from({ length: B }, (_, i) => option(i, `item ${i} of ${B}`)));
  buildFactorChoices();
  for (const [op, box] of [["center", "#center-channels"], ["maximize", "#max-channels"], ["balance", "#bal-channels"]]) {
    const names = data.formats[settings.format].channel_names;
    $(box).replaceChildren(...names.map((name, c) => {
      const label = document.createElement("label");
      label.innerHTML = `<input type="checkbox" value="${c}"> <span></span>`;
      label.querySelector("span").textContent = name;
      label.title = `channel ${c}`;
      label.querySelector("input").addEventListener("change", (event) => {
        const chosen = new Set(state.settings[op].channels);
        event.target.checked ? chosen.add(c) : chosen.delete(c);
        state.settings[op].channels = [...chosen].sort((a, b) => a - b);
        render();
      });
      return label;
    }));
  }
  const ambiguous = core.formatsFor(data, C).length > 1;
  $("#format-note").textContent = ambiguous
    ? `A ${C}-channel .latent does not record its format: pick the model family that made it.`
    : "";
}

function buildFactorChoices() {
  const sets = Object.keys(state.data.formats[state.settings.format].factor_sets);
  $("#factors").replaceChildren(...sets.map((k) => option(k, k === "comfyui" ? "ComfyUI's" : k === "blog" ? "the blog's (more contrast)" : k)));
  if (!sets.includes(state.settings.factors)) state.settings.factors = "comfyui";
}

const SLIDERS = {
  "#center-channel": ["center", "channelStrength"],
  "#center-global": ["center", "globalStrength"],
  "#clamp-threshold": ["clamp", "threshold"],
  "#clamp-boundary": ["clamp", "boundary"],
  "#clamp-strength": ["clamp", "strength"],
  "#max-boundary": ["maximize", "boundary"],
  "#max-strength": ["maximize", "strength"],
  "#bal-strength": ["balance", "strength"],
};
const SWITCHES = { "#center-on": "center", "#clamp-on": "clamp", "#max-on": "maximize", "#bal-on": "balance" };

function syncControls() {
  const s = state.settings;
  $("#format").value = s.format;
  $("#factors").value = s.factors;
  $("#item").value = String(s.item);
  $("#map-scale").value = s.mapScale;
  $("#clamp-mode").value = s.clamp.mode;
  for (const [selector, [op, key]] of Object.entries(SLIDERS)) {
    const input = $(selector);
    input.value = String(s[op][key]);
    input.parentElement.querySelector("output").textContent = Number(s[op][key]).toFixed(2);
  }
  for (const [selector, op] of Object.entries(SWITCHES)) {
    $(selector).checked = s[op].enabled;
    $(selector).closest("fieldset").classList.toggle("off", !s[op].enabled);
  }
  for (const [op, box] of [["center", "#center-channels"], ["maximize", "#max-channels"], ["balance", "#bal-channels"]]) {
    for (const input of $(box).querySelectorAll("input")) input.checked = s[op].channels.includes(Number(input.value));
  }
  const neutral = s.balance.target === "neutral";
  $("#bal-target-mode").value = neutral ? "neutral" : "color";
  $("#bal-target").disabled = neutral;
  if (!neutral) $("#bal-target").value = s.balance.target;
}

function wireControls() {
  for (const [selector, [op, key]] of Object.entries(SLIDERS)) {
    $(selector).addEventListener("input", (event) => {
      if (!state.settings) return;
      state.settings[op][key] = parseFloat(event.target.value);
      event.target.parentElement.querySelector("output").textContent = state.settings[op][key].toFixed(2);
      render();
    });
  }
  for (const [selector, op] of Object.entries(SWITCHES)) {
    $(selector).addEventListener("change", (event) => {
      if (!state.settings) return;
      state.settings[op].enabled = event.target.checked;
      event.target.closest("fieldset").classList.toggle("off", !event.target.checked);
      render();
    });
  }
  $("#format").addEventListener("change", (event) => {
    const C = state.latent.shape[1];
    state.settings = { ...core.defaultSettings(state.data, event.target.value, C), item: state.settings.item };
    buildFormatControls();
    syncControls();
    render();
  });
  const simple = { "#factors": "factors", "#map-scale": "mapScale" };
  // Every control but the file pickers changes the loaded latent's settings: nothing to do before one is loaded.
  const onSettings = (selector, kind, change) => $(selector).addEventListener(kind, (event) => {
    if (!state.settings) return;
    change(event.target.value);
    render();
  });
  for (const [selector, key] of Object.entries(simple)) onSettings(selector, "change", (value) => { state.settings[key] = value; });
  onSettings("#item", "change", (value) => { state.settings.item = Number(value); });
  onSettings("#clamp-mode", "change", (value) => { state.settings.clamp.mode = value; });
  onSettings("#bal-target-mode", "change", (value) => {
    const neutral = value === "neutral";
    $("#bal-target").disabled = neutral;
    state.settings.balance.target = neutral ? "neutral" : $("#bal-target").value;
  });
  onSettings("#bal-target", "input", (value) => { state.settings.balance.target = value; });
  $("#reset").addEventListener("click", () => {
    if (!state.latent) return;
    state.settings = core.defaultSettings(state.data, state.settings.format, state.latent.shape[1]);
    syncControls();
    render();
  });
  $("#copy").addEventListener("click", copyNodes);
  $("#refresh").addEventListener("click", refreshList);

  const drop = $("#drop");
  for (const target of [drop, document.body]) {
    target.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
    target.addEventListener("dragleave", () => drop.classList.remove("over"));
    target.addEventListener("drop", (event) => {
      event.preventDefault();
      event.stopPropagation();
      drop.classList.remove("over");
      openFile(event.dataTransfer?.files?.[0]);
    });
  }
  $("#file-input").addEventListener("change", (event) => openFile(event.target.files[0]));
}

// ------------------------------------------------------------------------------------------------ drawing

function putPixels(canvas, rgba, width, height) {
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d").putImageData(new ImageData(rgba, width, height), 0, 0);
}

function hex(rgb) {
  return "#" + rgb.map((v) => Math.round(Math.min(Math.max(v, 0), 1) * 255).toString(16).padStart(2, "0")).join("");
}

function opError(op, message) {
  const element = document.querySelector(`fieldset[data-op="${op}"] .op-error`);
  if (!element) return;
  element.hidden = !message;
  element.textContent = message ?? "";
}

function corrected(original, C, N, affine) {
  // Run the chain as the nodes would; an operation with a bad setting is reported and left out, of the preview
  // and of the exported nodes alike. Returns the corrected values and the settings that made them.
  const s = structuredClone(state.settings);
  for (const op of ["clamp", "maximize", "balance"]) {
    opError(op, null);
    if (!s[op].enabled) continue;
    try {
      const only = { ...core.defaultSettings(state.data, s.format, C), [op]: s[op] };
      core.applyCorrections(new Float64Array(C * 1), C, 1, only, state.data, affine);
    } catch (error) {
      opError(op, error.message);
      s[op].enabled = false;
    }
  }
  return { values: core.applyCorrections(original, C, N, s, state.data, affine), applied: s };
}

function render() {
  const { latent, settings, data } = state;
  if (!latent) return;
  const [, C, H, W] = latent.shape;
  const N = H * W;
  const format = data.formats[settings.format];
  const affine = core.scaledAffine(core.rgbAffine(format, settings.factors), format);
  const original = core.itemScaled(latent, settings.item, format);
  const { values: after, applied } = corrected(original, C, N, affine);
  putPixels($("#preview-original"), core.previewRGBA(original, C, H, W, affine), W, H);
  putPixels($("#preview"), core.previewRGBA(after, C, H, W, affine), W, H);
  for (const [which, values] of [["before", original], ["after", after]]) {
    const color = hex(core.meanColor(values, C, N, affine));
    $(`#swatch-${which}`).style.background = color;
    $(`#cast-${which}`).textContent = `mean color ${color}`;
  }
  drawMaps(after, C, H, W, format);
  drawHistograms(original, after, C, N, format);
  $("#export").value = JSON.stringify(core.exportNodes(applied, data, C), null, 1);
}

function drawMaps(values, C, H, W, format) {
  const N = H * W;
  const bounds = core.mapBounds(values, C, N, state.settings.mapScale);
  const stats = core.channelStats(values, C, N);
  const box = $("#maps");
  if (box.children.length !== C) {
    box.replaceChildren(...Array.from({ length: C }, (_, c) => {
      const tile = document.createElement("div");
      tile.className = "map";
      tile.innerHTML = `<div class="label"></div><canvas data-channel="${c}"></canvas>`;
      return tile;
    }));
  }
  [...box.children].forEach((tile, c) => {
    putPixels(tile.querySelector("canvas"), core.mapRGBA(values, c, N, bounds[c], state.data.diverging), W, H);
    const s = stats[c];
    const sign = (v) => (v >= 0 ? "+" : "") + v.toFixed(3);
    tile.querySelector(".label").textContent =
      `${format.channel_names[c]}  (±${bounds[c].toPrecision(3)})\nmean ${sign(s.mean)}  std ${s.std.toFixed(3)}\nmin ${sign(s.min)}  max ${sign(s.max)}`;
  });
  $("#maps-note").textContent = state.settings.mapScale === "shared"
    ? `(scaled units, blue − / red +, one range ±${bounds[0].toPrecision(3)})`
    : "(scaled units, blue − / red +, each channel its own range)";
}

function drawHistograms(before, after, C, N, format) {
  const canvas = $("#histogram");
  const context = canvas.getContext("2d");
  const [lo, hi] = core.valueRange(before, after);
  const bins = 64;
  const counts = core.histograms(after, C, N, bins, lo, hi);
  const faint = core.histograms(before, C, N, bins, lo, hi);
  const peak = Math.max(1, ...counts.flat(), ...faint.flat());
  const left = 44, right = 10, top = 10, bottom = 24;
  const width = canvas.width - left - right, height = canvas.height - top - bottom;
  const x = (v) => left + ((v - lo) / (hi - lo)) * width;
  context.fillStyle = "#222228";
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.strokeStyle = "#555";
  context.strokeRect(left, top, width, height);
  context.fillStyle = "#9a9aa6";
  context.font = "12px system-ui, sans-serif";
  const marks = [lo, 0, hi];
  if (state.settings.clamp.enabled) marks.push(-state.settings.clamp.boundary, state.settings.clamp.boundary);
  for (const v of marks) {
    if (v < lo || v > hi) continue;
    context.strokeStyle = v === 0 ? "#666" : "#444";
    context.setLineDash(v === lo || v === hi ? [] : [4, 3]);
    context.beginPath(); context.moveTo(x(v), top); context.lineTo(x(v), top + height); context.stroke();
    context.fillText(v.toFixed(2), Math.min(x(v) - 10, canvas.width - 40), top + height + 16);
  }
  context.setLineDash([]);
  context.fillText(String(peak), 4, top + 10);
  const step = width / bins;
  for (const [series, alpha, lineWidth] of [[faint, 0.35, 1], [counts, 1, 2]]) {
    series.forEach((row, c) => {
      context.strokeStyle = PALETTE[c % PALETTE.length];
      context.globalAlpha = alpha;
      context.lineWidth = lineWidth;
      context.beginPath();
      row.forEach((n, i) => {
        const px = left + (i + 0.5) * step, py = top + height * (1 - n / peak);
        i ? context.lineTo(px, py) : context.moveTo(px, py);
      });
      context.stroke();
    });
  }
  context.globalAlpha = 1;
  context.lineWidth = 1;
  $("#histogram-legend").replaceChildren(...format.channel_names.map((name, c) => {
    const span = document.createElement("span");
    span.textContent = `■ ${name}`;
    span.style.color = PALETTE[c % PALETTE.length];
    return span;
  }));
}

// ------------------------------------------------------------------------------------------------ export

async function copyNodes() {
  const text = $("#export").value;
  if (!text) return;
  // Same origin as ComfyUI: its canvas pastes from this local-storage key on Ctrl+V.
  localStorage.setItem("litegrapheditor_clipboard", text);
  try {
    await navigator.clipboard.writeText(text);
  } catch { /* the local-storage copy is what ComfyUI pastes from */ }
  say("Copied. In ComfyUI, click the canvas and press Ctrl+V.", "info");
}

// ------------------------------------------------------------------------------------------------ start

async function start() {
  wireControls();
  try {
    const response = await fetch("latent_lab_data.json", { cache: "no-cache" });
    state.data = await response.json();
  } catch (error) {
    say(`Could not load the Explorer's data file: ${error.message}`);
    return;
  }
  const query = new URLSearchParams(location.search);
  await refreshList();
  if (query.get("filename")) {
    const entry = { type: query.get("type") ?? "output", subfolder: query.get("subfolder") ?? "", filename: query.get("filename") };
    await openListed(entry);
  } else if (query.get("src")) {
    const src = new URL(query.get("src"), location.href);
    if (src.origin !== location.origin) say("Only files from this server can be opened by address.");
    else await openUrl(src.href, src.pathname.split("/").pop());
  }
  document.body.dataset.ready = "true";
}

start();
