// The page of `zoo serve`: three tools over the JSON API (no framework, no CDN).
const $ = (id) => document.getElementById(id);
let entries = [];

function status(tool, text, kind) {
  const el = $(`${tool}-status`);
  el.textContent = text;
  el.className = `status ${kind || ""}`;
}

async function call(tool, url, form) {
  const button = $(`${tool}-run`);
  button.disabled = true;
  status(tool, "Working… (the first answer of a model takes a few seconds longer)", "working");
  $(`${tool}-result`).hidden = true;
  try {
    const response = await fetch(url, { method: "POST", body: form });
    let body;
    try { body = await response.json(); } catch { body = {}; }
    if (!response.ok) {
      const why = body.error || `the server answered ${response.status}`;
      status(tool, response.status === 413 ? `Too much at once: ${why}` : `Could not do it: ${why}`, "error");
      return null;
    }
    status(tool, "");
    return body;
  } catch (err) {
    status(tool, `The server cannot be reached (${err.message}); is \`zoo serve\` still running?`, "error");
    return null;
  } finally {
    button.disabled = false;
  }
}

function fillEntries() {
  document.querySelectorAll("select.entries").forEach((select) => {
    const kind = select.dataset.kind;
    select.innerHTML = "";
    entries.filter((e) => kind !== "face" || e.face)
      .forEach((e) => select.add(new Option(`${e.name} (${e.method}, ${e.primary_metric} ${e.value.toFixed(3)})`, e.name)));
  });
  const body = document.querySelector("#models-table tbody");
  body.innerHTML = "";
  entries.forEach((e) => {
    const row = body.insertRow();
    [e.name, e.method, e.dataset, e.primary_metric, e.value.toFixed(4), e.license].forEach((v) => { row.insertCell().textContent = v; });
  });
}

function preview(input, img) {
  input.addEventListener("change", () => { if (input.files[0]) img.src = URL.createObjectURL(input.files[0]); });
}

function thumbnail(src, lines) {
  const card = document.createElement("div");
  card.className = "card";
  const img = document.createElement("img");
  img.src = src;
  card.append(img);
  lines.forEach((line) => { const s = document.createElement("small"); s.textContent = line; card.append(s); });
  return card;
}

$("verify-run").addEventListener("click", async () => {
  const a = $("verify-a").files[0], b = $("verify-b").files[0];
  if (!a || !b) { status("verify", "Choose two photos first.", "error"); return; }
  const form = new FormData();
  form.append("entry", $("verify-entry").value);
  form.append("a", a);
  form.append("b", b);
  const r = await call("verify", "/api/verify", form);
  if (!r) return;
  $("verify-verdict").textContent = r.verdict;
  $("verify-verdict").className = `verdict ${r.same ? "same" : "different"}`;
  $("verify-crop-a").src = r.crops.a;
  $("verify-crop-b").src = r.crops.b;
  $("verify-distance").textContent = r.distance.toFixed(3);
  $("verify-threshold").textContent = r.threshold.toFixed(3);
  $("verify-result").hidden = false;
});

$("classify-add").addEventListener("click", () => {
  const row = document.querySelector(".class-row").cloneNode(true);
  row.querySelectorAll("input").forEach((i) => { i.value = ""; });
  $("classify-classes").append(row);
});

$("classify-run").addEventListener("click", async () => {
  const form = new FormData();
  form.append("entry", $("classify-entry").value);
  const zip = $("classify-zip").files[0];
  if (zip) {
    form.append("support_zip", zip);
  } else {
    const labels = [];
    document.querySelectorAll(".class-row").forEach((row) => {
      const name = row.querySelector(".class-name").value.trim();
      for (const f of row.querySelector(".class-files").files) { form.append("support", f); labels.push(name || "(unnamed)"); }
    });
    if (!labels.length) { status("classify", "Give a few example pictures for each kind first.", "error"); return; }
    form.append("labels", JSON.stringify(labels));
  }
  const queries = $("classify-queries").files;
  if (!queries.length) { status("classify", "Choose the pictures to sort.", "error"); return; }
  for (const f of queries) form.append("queries", f);
  const r = await call("classify", "/api/classify", form);
  if (!r) return;
  const out = $("classify-result");
  out.innerHTML = "";
  r.results.forEach((q) => {
    const p = document.createElement("p");
    p.innerHTML = `<b></b> looks like <b class="predicted"></b> (confidence ${(100 * q.confidence).toFixed(0)}%); nearest examples:`;
    p.querySelector("b").textContent = q.query;
    p.querySelector(".predicted").textContent = q.class;
    const grid = document.createElement("div");
    grid.className = "grid";
    q.nearest.forEach((n) => grid.append(thumbnail(n.thumbnail, [n.class, `distance ${n.distance.toFixed(3)}`])));
    out.append(p, grid);
  });
  out.hidden = false;
});

$("search-run").addEventListener("click", async () => {
  const form = new FormData();
  form.append("entry", $("search-entry").value);
  form.append("k", $("search-k").value);
  const gallery = $("search-gallery").value;
  if (gallery) form.append("gallery", gallery);
  else for (const f of $("search-gallery-files").files) form.append("gallery_files", f);
  const query = $("search-query").files[0], text = $("search-text").value.trim();
  if (query) form.append("query", query);
  else if (text) form.append("text", text);
  else { status("search", "Give a picture or some words to search with.", "error"); return; }
  const r = await call("search", "/api/search", form);
  if (!r) return;
  const out = $("search-result");
  out.innerHTML = "";
  r.neighbours.forEach((n, i) => out.append(thumbnail(n.thumbnail, [`${i + 1}. ${n.name}`, `distance ${n.distance.toFixed(3)}`])));
  out.hidden = false;
});

document.querySelectorAll(".tab").forEach((tab) => tab.addEventListener("click", () => {
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t === tab));
  document.querySelectorAll(".tool").forEach((s) => { s.hidden = s.id !== tab.dataset.tool; });
}));
preview($("verify-a"), $("verify-a-preview"));
preview($("verify-b"), $("verify-b-preview"));

(async () => {
  try {
    entries = await (await fetch("/api/entries")).json();
    fillEntries();
    const galleries = await (await fetch("/api/galleries")).json();
    galleries.forEach((g) => $("search-gallery").add(new Option(g, g)));
  } catch (err) {
    status("verify", `Could not list the models (${err.message}).`, "error");
  }
})();
