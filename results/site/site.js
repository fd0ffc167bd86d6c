// xfr results site: sortable tables, the claims filter and the explorer. No dependencies; works
// from file:// (the explorer's data comes from data.js as window.XFR_DATA).
"use strict";

function cellKey(td) {
  if (!td) return "";
  const s = td.getAttribute("data-sort");
  if (s !== null && s !== "") return parseFloat(s);
  const t = td.textContent.trim();
  const v = Number(t);
  return t !== "" && !isNaN(v) ? v : t.toLowerCase();
}

function sortTable(table, col, dir) {
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = cellKey(a.cells[col]), y = cellKey(b.cells[col]);
    const xe = x === "" , ye = y === "";
    if (xe !== ye) return xe ? 1 : -1;  // empty cells last either way
    if (typeof x === "number" && typeof y === "number") return dir * (x - y);
    return dir * String(x).localeCompare(String(y));
  });
  rows.forEach(r => body.appendChild(r));
  Array.from(table.tHead.rows[0].cells).forEach((th, i) =>
    th.setAttribute("aria-sort", i === col ? (dir > 0 ? "ascending" : "descending") : "none"));
}

document.addEventListener("click", ev => {
  const th = ev.target.closest("table.sortable thead th");
  if (!th) return;
  const table = th.closest("table");
  const dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
  sortTable(table, th.cellIndex, dir);
});

// ---------------------------------------------------------------- claims filter (landing page)
function filterClaims() {
  const table = document.getElementById("claims");
  if (!table) return;
  const verdict = document.getElementById("verdict-filter").value;
  const text = document.getElementById("claims-search").value.toLowerCase();
  let shown = 0;
  Array.from(table.tBodies[0].rows).forEach(r => {
    const ok = (!verdict || r.getAttribute("data-verdict") === verdict) &&
               (!text || r.textContent.toLowerCase().includes(text));
    r.hidden = !ok;
    if (ok) shown += 1;
  });
  document.getElementById("claims-count").textContent = shown + " of " + table.tBodies[0].rows.length + " claims shown";
}

// ---------------------------------------------------------------- explorer
const X = { coll: null, selected: null };

function fmt(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (typeof v === "number") {
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e4) ? v.toExponential(2) : String(+v.toFixed(3));
  }
  return String(v);
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  Object.entries(attrs || {}).forEach(([k, v]) => {
    if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  });
  children.forEach(c => e.appendChild(typeof c === "string" ? document.createTextNode(c) : c));
  return e;
}

function columnKind(coll, col) {
  const vals = coll.items.map(it => it.fields[col]).filter(v => v !== null && v !== undefined);
  if (vals.length && vals.every(v => typeof v === "boolean")) return "bool";
  if (vals.length && vals.every(v => typeof v === "number")) return "number";
  const distinct = new Set(vals);
  return distinct.size > 1 && distinct.size <= 12 ? "choice" : "text";
}

function buildFilters(coll) {
  const box = document.getElementById("filters");
  box.innerHTML = "";
  box.appendChild(el("label", {}, "search ", el("input", { type: "search", id: "f-search", placeholder: "name or value" })));
  const withMaps = el("input", { type: "checkbox", id: "f-maps" });
  box.appendChild(el("label", {}, withMaps, " with maps only"));
  coll.columns.forEach((col, i) => {
    const kind = columnKind(coll, col);
    if (kind === "bool" || kind === "choice") {
      const sel = el("select", { id: "f-col-" + i, "data-col": col, "data-kind": kind });
      sel.appendChild(el("option", { value: "", text: "all" }));
      const vals = kind === "bool" ? ["yes", "no"] :
        Array.from(new Set(coll.items.map(it => fmt(it.fields[col])))).sort();
      vals.forEach(v => sel.appendChild(el("option", { value: v, text: v })));
      box.appendChild(el("label", {}, col + " ", sel));
    } else if (kind === "number") {
      box.appendChild(el("label", {}, col + " ≤ ",
        el("input", { type: "number", step: "any", id: "f-col-" + i, "data-col": col, "data-kind": "max", size: "6" })));
    }
  });
  box.appendChild(el("span", { id: "f-count" }));
  box.querySelectorAll("input, select").forEach(e => {
    e.addEventListener("input", applyFilters);
    e.addEventListener("change", applyFilters);
  });
}

function applyFilters() {
  const coll = X.coll;
  const text = document.getElementById("f-search").value.toLowerCase();
  const withMaps = document.getElementById("f-maps").checked;
  const tests = Array.from(document.querySelectorAll("#filters [data-col]")).filter(e => e.value !== "");
  let shown = 0;
  Array.from(document.getElementById("items").tBodies[0].rows).forEach(tr => {
    const it = coll.items[+tr.getAttribute("data-index")];
    let ok = (!withMaps || it.maps.length > 0) &&
             (!text || (it.title + " " + Object.values(it.fields).map(fmt).join(" ")).toLowerCase().includes(text));
    tests.forEach(e => {
      const v = it.fields[e.getAttribute("data-col")];
      if (e.getAttribute("data-kind") === "max") ok = ok && v !== null && v <= parseFloat(e.value);
      else ok = ok && fmt(v) === e.value;
    });
    tr.hidden = !ok;
    if (ok) shown += 1;
  });
  document.getElementById("f-count").textContent = shown + " of " + coll.items.length + " shown";
}

function buildTable(coll) {
  const table = document.getElementById("items");
  table.innerHTML = "";
  const head = el("tr", {}, el("th", { text: "item" }), ...coll.columns.map(c => el("th", { text: c })),
                  el("th", { text: "maps" }));
  table.appendChild(el("thead", {}, head));
  const body = el("tbody", {});
  coll.items.forEach((it, i) => {
    const tr = el("tr", { "data-index": String(i), tabindex: "0" }, el("td", { text: it.title }));
    coll.columns.forEach(c => {
      const v = it.fields[c];
      const td = el("td", { text: fmt(v) });
      if (typeof v === "number") td.setAttribute("data-sort", String(v));
      if (c === "correct" && v === false) td.className = "wrong";
      tr.appendChild(td);
    });
    tr.appendChild(el("td", { text: String(it.maps.length), "data-sort": String(it.maps.length) }));
    tr.addEventListener("click", () => select(i));
    tr.addEventListener("keydown", ev => { if (ev.key === "Enter") select(i); });
    body.appendChild(tr);
  });
  table.appendChild(body);
}

function figure(src, caption, lines, cls) {
  const cap = el("figcaption", {}, el("b", { text: caption }));
  lines.filter(Boolean).forEach(l => cap.appendChild(el("div", { text: l })));
  return el("figure", { class: cls || "" }, el("img", { src: src, alt: caption }), cap);
}

function select(i) {
  const coll = X.coll, it = coll.items[i];
  X.selected = i;
  document.querySelectorAll("#items tbody tr").forEach(tr =>
    tr.classList.toggle("selected", +tr.getAttribute("data-index") === i));
  const v = document.getElementById("viewer");
  v.innerHTML = "";
  v.appendChild(el("h2", { text: it.title }));
  const facts = el("dl", {});
  Object.entries(it.fields).forEach(([k, val]) => { facts.appendChild(el("dt", { text: k })); facts.appendChild(el("dd", { text: fmt(val) })); });
  v.appendChild(facts);
  if (!it.maps.length) {
    v.appendChild(el("p", { class: "hint", text: "No maps were computed for this item in the default run. " +
      "Tick 'with maps only' to list the items that have them." }));
    return;
  }
  const grid = el("div", { class: "grid", id: "maps" });
  it.images.forEach(im => grid.appendChild(figure(im.src, im.name, [im.label], "input")));
  it.maps.forEach(m => {
    const scores = Object.entries(m.scores).map(([k, val]) => k + " " + fmt(val)).join(", ");
    grid.appendChild(figure(m.src, m.method, ["on " + m.on, m.params, scores], "map " + m.style));
  });
  v.appendChild(grid);
}

function showCollection(key) {
  const data = window.XFR_DATA;
  const coll = data.collections.find(c => c.stage + "/" + c.name === key) || data.collections[0];
  X.coll = coll;
  X.selected = null;
  document.querySelectorAll("#tabs button").forEach(b =>
    b.classList.toggle("active", b.getAttribute("data-key") === coll.stage + "/" + coll.name));
  document.getElementById("description").textContent = coll.description;
  buildFilters(coll);
  buildTable(coll);
  applyFilters();
  document.getElementById("viewer").innerHTML = '<p class="hint">Select a row to see its maps.</p>';
}

function initExplorer() {
  const data = window.XFR_DATA;
  const tabs = document.getElementById("tabs");
  if (!data || !tabs) return;
  data.collections.forEach(c => {
    const key = c.stage + "/" + c.name;
    const b = el("button", { "data-key": key, type: "button" }, c.title + " (" + c.items.length + ")");
    b.addEventListener("click", () => { location.hash = key; showCollection(key); });
    tabs.appendChild(b);
  });
  showCollection(decodeURIComponent(location.hash.slice(1)));
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.getElementById("claims")) {
    ["input", "change"].forEach(kind => {
      document.getElementById("verdict-filter").addEventListener(kind, filterClaims);
      document.getElementById("claims-search").addEventListener(kind, filterClaims);
    });
    filterClaims();
  }
  initExplorer();
});
