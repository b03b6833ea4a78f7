// htrjand serve: the page's script (plain JS, no build step). Talks to the JSON API under /api.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  lines: [],        // {key, name, image (URL), result, text, error, lineId, element}
  page: null,       // {token, format, xml} for a page upload
  limits: {max_files: 200, max_upload_mb: 20},
  nextKey: 1,
};
const CHUNK_FILES = 8;

function setStatus(message, isError = false) {
  const status = $("status");
  status.textContent = message;
  status.classList.toggle("error", isError);
}

async function apiError(response) {
  try {
    const data = await response.json();
    return data.error || JSON.stringify(data);
  } catch (e) {
    return `${response.status} ${response.statusText}`;
  }
}

// ------------------------------------------------------------------ model

async function loadModel() {
  try {
    const response = await fetch("/api/model");
    if (!response.ok) throw new Error(await apiError(response));
    const m = await response.json();
    state.limits = m.limits;
    const metrics = Object.entries(m.metrics || {})
      .filter(([k, v]) => typeof v === "number" && /cer|wer/i.test(k))
      .map(([k, v]) => `${k} ${(100 * v).toFixed(2)}%`).join(", ");
    $("model-info").textContent = `Model ${m.model || "(unnamed)"}: ${m.preset}, ${m.engine}, ` +
      `${m.parameters.toLocaleString()} parameters, ${m.charset_size} characters, decoder ${m.decoder}` +
      (metrics ? ` (${metrics})` : "") + (m.calibrated ? ", calibrated confidences" : "");
    $("threshold").value = m.low_confidence;
    showThreshold();
  } catch (e) {
    $("model-info").textContent = `Cannot describe the model: ${e.message}`;
  }
}

// ------------------------------------------------------------------ rendering

function threshold() {
  return parseFloat($("threshold").value);
}

function showThreshold() {
  $("threshold-value").textContent = threshold().toFixed(2);
}

function renderTranscription(container, result) {
  container.replaceChildren();
  const chars = Array.from(result.text);  // code points, as the server's character confidences
  const limit = threshold();
  let low = 0;
  chars.forEach((ch, i) => {
    const conf = result.char_confidences[i];
    if (conf !== undefined && conf < limit) {
      const mark = document.createElement("mark");
      mark.className = "low";
      mark.textContent = ch;
      mark.title = `confidence ${conf.toFixed(2)}`;
      container.append(mark);
      low += 1;
    } else {
      container.append(document.createTextNode(ch));
    }
  });
  if (!chars.length) {
    const empty = document.createElement("span");
    empty.className = "empty";
    empty.textContent = "(nothing read)";
    container.append(empty);
  }
  return low;
}

function renderLine(line) {
  const li = line.element;
  li.replaceChildren();
  li.className = "line" + (line.error ? " failed" : "") + (line.result ? "" : " pending");
  const number = state.lines.indexOf(line) + 1;
  const figure = document.createElement("div");
  figure.className = "line-image";
  if (line.image) {
    const img = document.createElement("img");
    img.src = line.image;
    img.alt = `Line ${number}: ${line.name}`;
    figure.append(img);
  }
  li.append(figure);

  const meta = document.createElement("p");
  meta.className = "meta";
  li.append(meta);
  if (line.error) {
    meta.textContent = `${line.name}: ${line.error}`;
    return;
  }
  if (!line.result) {
    meta.textContent = `${line.name}: reading…`;
    return;
  }
  const text = document.createElement("p");
  text.className = "transcription";
  const low = renderTranscription(text, line.result);
  li.insertBefore(text, meta);
  const edited = line.text !== line.result.text;
  meta.textContent = `${line.name} · confidence ${(100 * line.result.confidence).toFixed(1)}%` +
    ` · ${low} low-confidence character${low === 1 ? "" : "s"}` + (edited ? " · edited" : "");

  const id = `text-${line.key}`;
  const label = document.createElement("label");
  label.htmlFor = id;
  label.textContent = `Text of line ${number}`;
  const input = document.createElement("input");
  input.type = "text";
  input.id = id;
  input.className = "edit";
  input.dir = "auto";
  input.spellcheck = false;
  input.value = line.text;
  input.addEventListener("input", () => {
    line.text = input.value;
    const isEdited = line.text !== line.result.text;
    li.classList.toggle("edited", isEdited);
    meta.textContent = meta.textContent.replace(/ · edited$/, "") + (isEdited ? " · edited" : "");
  });
  li.classList.toggle("edited", edited);
  const field = document.createElement("div");
  field.className = "field";
  field.append(label, input);
  li.append(field);
}

function refreshAll() {
  const done = state.lines.filter((l) => l.result).length;
  $("line-count").textContent = state.lines.length ? `(${done} of ${state.lines.length} read)` : "";
  $("download-tsv").disabled = done === 0;
  $("clear").disabled = state.lines.length === 0;
  const xml = $("download-xml");
  xml.hidden = !state.page;
  xml.disabled = !state.page || done === 0;
  if (state.page) xml.textContent = `Download ${state.page.format === "alto" ? "ALTO" : "PAGE"} XML`;
}

function addLine(name, image, lineId = null) {
  const line = {key: state.nextKey++, name, image, result: null, text: "", error: null, lineId,
                element: document.createElement("li")};
  state.lines.push(line);
  $("lines").append(line.element);
  renderLine(line);
  return line;
}

function finishLine(line, result) {
  line.result = result.error ? null : result;
  line.error = result.error || null;
  line.text = result.error ? "" : result.text;
  renderLine(line);
}

function clearAll() {
  for (const line of state.lines) {
    if (line.image && line.image.startsWith("blob:")) URL.revokeObjectURL(line.image);
  }
  state.lines = [];
  state.page = null;
  $("lines").replaceChildren();
  refreshAll();
}

// ------------------------------------------------------------------ recognition

function decoderFields(form) {
  const decoder = $("decoder").value;
  if (decoder) form.append("decoder", decoder);
}

async function recognizeChunk(items) {
  // items: [{file, line}]; a 413/422 naming bad files marks them and sends the others again
  let pending = items;
  while (pending.length) {
    const form = new FormData();
    pending.forEach(({file}) => form.append("files", file, file.name));
    decoderFields(form);
    let response;
    try {
      response = await fetch("/api/recognize", {method: "POST", body: form});
    } catch (e) {
      pending.forEach(({line}) => finishLine(line, {error: `request failed: ${e.message}`}));
      return;
    }
    if (response.ok) {
      const results = await response.json();
      pending.forEach(({line}, i) => finishLine(line, results[i]));
      return;
    }
    let data = {};
    try { data = await response.json(); } catch (e) { /* not JSON */ }
    const message = data.error || `${response.status} ${response.statusText}`;
    if (!Array.isArray(data.files) || !data.files.length) {
      pending.forEach(({line}) => finishLine(line, {error: message}));
      return;
    }
    const reasons = new Map(data.files.map((f) => [f.name, f.reason]));
    const next = [];
    for (const item of pending) {
      if (reasons.has(item.file.name)) finishLine(item.line, {error: reasons.get(item.file.name)});
      else next.push(item);
    }
    if (next.length === pending.length) {  // names did not match: give up on this chunk
      pending.forEach(({line}) => finishLine(line, {error: message}));
      return;
    }
    pending = next;
    refreshAll();
  }
}

async function recognizeLines(files) {
  if (state.page) clearAll();
  const items = files.map((file) => ({file, line: addLine(file.name, URL.createObjectURL(file))}));
  refreshAll();
  const maxBytes = state.limits.max_upload_mb * 1024 * 1024 * 0.9;
  const perChunk = Math.max(1, Math.min(CHUNK_FILES, state.limits.max_files));
  let chunk = [], bytes = 0, done = 0;
  const flush = async () => {
    if (!chunk.length) return;
    setStatus(`Reading lines ${done + 1}–${done + chunk.length} of ${items.length}…`);
    await recognizeChunk(chunk);
    done += chunk.length;
    chunk = [];
    bytes = 0;
    refreshAll();
  };
  for (const item of items) {
    if (chunk.length >= perChunk || (chunk.length && bytes + item.file.size > maxBytes)) await flush();
    chunk.push(item);
    bytes += item.file.size;
  }
  await flush();
  const failed = items.filter(({line}) => line.error).length;
  setStatus(`Read ${items.length - failed} of ${items.length} line images` +
            (failed ? `; ${failed} could not be read.` : "."), failed > 0);
}

function cropDataUrl(pageImage, region) {
  const [x0, y0, x1, y1] = region;
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, x1 - x0);
  canvas.height = Math.max(1, y1 - y0);
  canvas.getContext("2d").drawImage(pageImage, x0, y0, x1 - x0, y1 - y0, 0, 0, x1 - x0, y1 - y0);
  return canvas.toDataURL("image/png");
}

async function loadImage(file) {
  const url = URL.createObjectURL(file);
  try {
    const img = new Image();
    img.src = url;
    await img.decode();
    return img;
  } catch (e) {
    return null;  // e.g. TIFF: the browser cannot show it, the server can still read it
  } finally {
    URL.revokeObjectURL(url);
  }
}

async function recognizePage(imageFile, xmlFile) {
  clearAll();
  setStatus(`Reading the lines of ${imageFile.name}…`);
  const form = new FormData();
  form.append("image", imageFile, imageFile.name);
  form.append("xml", xmlFile, xmlFile.name);
  decoderFields(form);
  let response;
  try {
    response = await fetch("/api/page", {method: "POST", body: form});
  } catch (e) {
    setStatus(`Request failed: ${e.message}`, true);
    return;
  }
  if (!response.ok) {
    setStatus(await apiError(response), true);
    return;
  }
  const page = await response.json();
  state.page = {token: page.token, format: page.format, xml: page.xml};
  const pageImage = await loadImage(imageFile);
  for (const item of page.lines) {
    const image = pageImage && item.region ? cropDataUrl(pageImage, item.region) : null;
    const line = addLine(`${page.image}#${item.id}`, image, item.id);
    finishLine(line, item.result || {error: item.error || "line skipped"});
  }
  refreshAll();
  const read = page.lines.filter((l) => l.result && !l.result.error).length;
  setStatus(`Read ${read} of ${page.lines.length} lines of ${page.xml} (${page.format.toUpperCase()})` +
            (page.problems.length ? `; ${page.problems.length} skipped.` : "."), page.problems.length > 0);
}

async function handleFiles(fileList) {
  const files = Array.from(fileList);
  if (!files.length) return;
  const isXml = (f) => /\.xml$/i.test(f.name) || /xml/.test(f.type);
  const xmls = files.filter(isXml);
  const images = files.filter((f) => !isXml(f));
  if (xmls.length) {
    if (xmls.length !== 1 || images.length !== 1) {
      setStatus("For a page, choose exactly one page image and its one PAGE or ALTO XML file.", true);
      return;
    }
    await recognizePage(images[0], xmls[0]);
  } else {
    await recognizeLines(images);
  }
  refreshAll();
}

// ------------------------------------------------------------------ downloads

function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30000);
}

function fileName(response, fallback) {
  const header = response.headers.get("Content-Disposition") || "";
  const star = header.match(/filename\*=UTF-8''([^;]+)/i);
  if (star) return decodeURIComponent(star[1]);
  const plain = header.match(/filename="([^"]+)"/i);
  return plain ? plain[1] : fallback;
}

async function download(url, options, fallback) {
  try {
    const response = await fetch(url, options);
    if (!response.ok) {
      setStatus(`Download failed: ${await apiError(response)}`, true);
      return;
    }
    const name = fileName(response, fallback);
    saveBlob(await response.blob(), name);
    setStatus(`Downloaded ${name}.`);
  } catch (e) {
    setStatus(`Download failed: ${e.message}`, true);
  }
}

function downloadTsv() {
  const lines = state.lines.filter((l) => l.result).map((l) => ({image: l.name, text: l.text}));
  download("/api/export/tsv", {method: "POST", headers: {"Content-Type": "application/json"},
                               body: JSON.stringify(lines)}, "transcriptions.tsv");
}

function downloadXml() {
  if (!state.page) return;
  const texts = {};
  state.lines.filter((l) => l.result && l.lineId !== null).forEach((l) => { texts[l.lineId] = l.text; });
  const form = new FormData();
  form.append("token", state.page.token);
  form.append("texts", JSON.stringify(texts));
  download("/api/export/page", {method: "POST", body: form}, state.page.xml);
}

// ------------------------------------------------------------------ wiring

function init() {
  const input = $("file-input");
  input.addEventListener("change", async () => {
    await handleFiles(input.files);
    input.value = "";
  });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    handleFiles(e.dataTransfer.files);
  });
  $("threshold").addEventListener("input", () => {
    showThreshold();
    state.lines.filter((l) => l.result).forEach((l) => {
      const text = l.element.querySelector(".transcription");
      const low = renderTranscription(text, l.result);
      const meta = l.element.querySelector(".meta");
      meta.textContent = meta.textContent.replace(/· \d+ low-confidence characters?/,
        `· ${low} low-confidence character${low === 1 ? "" : "s"}`);
    });
  });
  $("download-tsv").addEventListener("click", downloadTsv);
  $("download-xml").addEventListener("click", downloadXml);
  $("clear").addEventListener("click", () => { clearAll(); setStatus("Cleared."); });
  loadModel();
  refreshAll();
}

document.addEventListener("DOMContentLoaded", init);
