// plait's search page: plain JS, no build step, no CDN (works offline).
// Everything user data touches is set through textContent, never innerHTML: item text comes
// from manifests nobody vetted. Images are fetched with the API key and shown as blob: URLs.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "plait-api-key";
let labels = [];       // [{name, column, kind, values|min,max}]
let objectUrls = [];   // blob: URLs of the images shown now (revoked on the next render)

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const key = sessionStorage.getItem(KEY);
  if (key) h["X-API-Key"] = key;
  return h;
}

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.headers);
  const response = await fetch(path, opts);
  if (response.status === 401) {
    $("key-form").hidden = false;
    throw new Error("this server needs an API key: enter it above");
  }
  if (!response.ok) {
    let body = {};
    try { body = await response.json(); } catch (e) { /* not JSON */ }
    const message = body.error || response.statusText;
    throw new Error(body.fix ? `${message} (fix: ${body.fix})` : message);
  }
  return response;
}

function status(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

// --- start-up: tables and label filters ------------------------------------------------------
async function loadTables() {
  const body = await (await api("/tables")).json();
  const select = $("table");
  select.replaceChildren();
  for (const name of body.tables) {
    const option = el("option", null, name);
    option.value = name;
    select.appendChild(option);
  }
  if (body.default) select.value = body.default;
  if (!body.tables.length) throw new Error("no vector tables yet: run plait embed and plait fuse");
}

async function loadLabels() {
  labels = (await (await api("/labels")).json()).labels;
  const list = $("filter-list");
  list.replaceChildren();
  for (const label of labels) {
    const box = el("div", "filter");
    box.dataset.label = label.name;
    const id = `filter-${label.name}`;
    const caption = el("label", null, label.name + (label.kind === "list" ? " (has)" : ""));
    caption.htmlFor = id;
    box.appendChild(caption);
    if (label.kind === "float") {
      const range = el("div", "range");
      for (const bound of ["min", "max"]) {
        const input = el("input");
        input.type = "number";
        input.step = "any";
        input.placeholder = `${bound} ${label[bound] ?? ""}`;
        input.dataset.bound = bound;
        if (bound === "min") input.id = id;
        range.appendChild(input);
      }
      box.appendChild(range);
    } else {
      const select = el("select");
      select.id = id;
      const any = el("option", null, "(any)");
      any.value = "";
      select.appendChild(any);
      for (const v of label.values) {
        const option = el("option", null, `${v.value} (${v.count})`);
        option.value = v.value;
        select.appendChild(option);
      }
      box.appendChild(select);
    }
    list.appendChild(box);
  }
  if (!labels.length) list.appendChild(el("p", null, "no label columns"));
}

function filters() {
  const out = [];
  for (const box of document.querySelectorAll(".filter")) {
    const label = box.dataset.label;
    const select = box.querySelector("select");
    if (select && select.value) out.push({ label, values: [select.value] });
    const f = { label };
    for (const input of box.querySelectorAll("input[data-bound]")) {
      if (input.value !== "") f[input.dataset.bound] = Number(input.value);
    }
    if ("min" in f || "max" in f) out.push(f);
  }
  return out;
}

// --- searching ----------------------------------------------------------------------------
function readAsBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(new Error(`cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

async function search(query, what) {
  const body = Object.assign({
    table: $("table").value,
    k: Math.max(1, Math.min(1000, Number($("k").value) || 24)),
    columns: ["text", "image_sha256", ...labels.map((l) => l.column)],
    filters: filters(),
  }, query);
  status(`Searching ${what}…`);
  const started = performance.now();
  try {
    const answer = await (await api("/search", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    })).json();
    const ms = Math.round(performance.now() - started);
    render(answer);
    const notes = answer.notes && answer.notes.length ? ` · ${answer.notes.join("; ")}` : "";
    status(`${what}: ${answer.hits.length} results from ${answer.table}@v${answer.version} ` +
           `(${answer.method}) in ${ms} ms${notes}`);
  } catch (e) {
    status(e.message, true);
  }
}

function distance(d) {
  return (Math.abs(d) < 5e-5 ? 0 : d).toFixed(4);
}

function render(answer) {
  for (const url of objectUrls) URL.revokeObjectURL(url);
  objectUrls = [];
  const grid = $("results");
  grid.replaceChildren();
  for (const hit of answer.hits) {
    const item = hit.item || {};
    const card = el("article", "card");
    card.dataset.id = hit.id;
    if (item.image_url) {
      const img = el("img", "thumb");
      img.alt = hit.id;
      card.appendChild(img);
      loadImage(img, item.image_url);
    } else {
      card.appendChild(el("div", "thumb noimage", "no image"));
    }
    card.appendChild(el("div", "id", hit.id));
    card.appendChild(el("div", "distance", `distance ${distance(hit.distance)}`));
    if (item.text) card.appendChild(el("div", "text", item.text));
    const chips = el("div", "chips");
    for (const label of labels) {
      const value = item[label.column];
      if (value === null || value === undefined) continue;
      const shown = Array.isArray(value) ? value.join(", ") : value;
      chips.appendChild(el("span", "chip", `${label.name}: ${shown}`));
    }
    card.appendChild(chips);
    const more = el("button", "more", "More like this");
    more.type = "button";
    more.addEventListener("click", () => search({ id: hit.id }, `More like ${hit.id}`));
    card.appendChild(more);
    grid.appendChild(card);
  }
}

async function loadImage(img, url) {
  try {
    const blob = await (await api(url)).blob();
    const objectUrl = URL.createObjectURL(blob);
    objectUrls.push(objectUrl);
    img.src = objectUrl;
  } catch (e) {
    img.alt = `image unavailable: ${e.message}`;
  }
}

// --- wiring -------------------------------------------------------------------------------
$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("image").files[0];
  if (file) {
    try {
      await search({ image_base64: await readAsBase64(file) }, `Image ${file.name}`);
    } catch (e) {
      status(e.message, true);
    }
    return;
  }
  const text = $("q").value.trim();
  if (!text) { status("Type a query, or choose an image.", true); return; }
  await search({ text }, `“${text}”`);
});

$("image").addEventListener("change", () => { $("clear-image").hidden = !$("image").files.length; });
$("clear-image").addEventListener("click", () => { $("image").value = ""; $("clear-image").hidden = true; });

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("key").value);
  $("key-form").hidden = true;
  start();
});

async function start() {
  try {
    await loadTables();
    await loadLabels();
    status("Ready: search by text or image; filters narrow the results.");
  } catch (e) {
    status(e.message, true);
  }
}

start();
