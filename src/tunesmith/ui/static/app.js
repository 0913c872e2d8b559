// tunesmith's page: a client of `tunesmith server` (OpenAI's /v1 routes and the page's /ui/api routes).
// It keeps no figures of its own: every number shown is read from the server on each visit.

import { $, ACTIVE, KEY, api, esc, failed, fmt, knowledgeOptions, metricRows, pickJob, poll, post, render,
         stopPolling } from "./core.js";
import { graderEditor, readGrader } from "./grader.js";
import { comparePage, exportPage, sideBySide } from "./tasks.js";
// Every event of a job, oldest first: the events route pages newest first with `after`.
async function allEvents(jobId) {
  let events = [], after = "";
  for (;;) {
    const page = await api(`/v1/fine_tuning/jobs/${jobId}/events?limit=100${after}`);
    events = events.concat(page.data);
    if (!page.has_more) return events.reverse();
    after = `&after=${page.data[page.data.length - 1].id}`;
  }
}

function chart(series) { // series: [{name, cls, points: [[x, y]]}] as an SVG line chart
  const all = series.flatMap((s) => s.points);
  if (!all.length) return `<p class="muted">No steps yet.</p>`;
  const [w, h, pad] = [720, 220, 36];
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs) || 1, Math.min(...ys), Math.max(...ys)];
  const sx = (x) => pad + ((x - x0) / (x1 - x0 || 1)) * (w - 2 * pad);
  const sy = (y) => h - pad - ((y - y0) / (y1 - y0 || 1)) * (h - 2 * pad);
  const colors = { train: "#1f5fa8", valid: "#c0392b" };
  const lines = series.map((s) => `<polyline fill="none" stroke="${colors[s.cls]}" stroke-width="2"
    points="${s.points.map((p) => `${sx(p[0])},${sy(p[1])}`).join(" ")}"/>`).join("");
  return `<svg class="chart" viewBox="0 0 ${w} ${h}" role="img" aria-label="loss by step">${lines}
    <text x="${pad}" y="${pad - 10}" font-size="12">${fmt(y1)}</text><text x="${pad}" y="${h - 10}" font-size="12">${fmt(y0)}
    (step ${x0} to ${x1})</text></svg>
    <p class="legend">${series.map((s) => `<span class="${s.cls}">— ${s.name}</span>`).join("")}</p>`;
}

// --- Data ------------------------------------------------------------------------------------------

function dataPage() {
  render(`<h1>Data</h1><p>Upload a training file (JSONL chat, ShareGPT, instruction, prompt/completion, text,
    preference rows, CSV or JSON): the data check lists every problem with its line and how to fix it.</p>
    <div class="drop" id="drop"><label for="data-file">Training file</label>
      <input id="data-file" type="file" accept=".jsonl,.json,.csv,.txt,.md">
      <p class="muted">or drop a file here</p></div>
    <div id="check" aria-live="polite"></div>`);
  const drop = $("drop");
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove("over"); upload(e.dataTransfer.files[0]); };
  $("data-file").onchange = (e) => upload(e.target.files[0]);
}

async function upload(file) {
  if (!file) return;
  const out = $("check");
  out.innerHTML = `<p>Uploading and checking ${esc(file.name)}…</p>`;
  try {
    const form = new FormData();
    form.append("purpose", "fine-tune");
    form.append("file", file);
    const uploaded = await api("/v1/files", { method: "POST", body: form });
    const report = await api(`/ui/api/files/${uploaded.id}/check`);
    out.innerHTML = checkReport(uploaded, report);
  } catch (err) {
    out.innerHTML = `<p class="error" role="alert">${esc(err.message)}</p>`;
  }
}

function checkReport(uploaded, report) {
  const problems = [...report.errors.map((i) => ["error", i]), ...report.warnings.map((i) => ["warning", i])];
  const head = report.ok
    ? `<p class="ok" role="status"><strong>Data check passed</strong> (${report.warnings.length} warning(s)).
        ${{ grpo: "Its rows are RFT prompts, trained by objective grpo with a grader.",
            dpo: "Its rows are preference pairs, trained by objective dpo." }[report.objective] || ""}
        <a href="#/train?file=${uploaded.id}${report.objective ? `&objective=${report.objective}` : ""}">Train on ${
          esc(uploaded.filename)}</a></p>`
    : `<p class="error" role="status"><strong>Data check failed:</strong> ${report.errors.length} error(s),
        ${report.warnings.length} warning(s). Fix the lines below and upload the file again.</p>`;
  const table = problems.length ? `<table><caption>Problems</caption><thead><tr><th>Severity</th><th>Where</th>
      <th>Field</th><th>Problem and fix</th></tr></thead><tbody>${problems.map(([sev, i]) => `<tr>
      <td class="${sev === "error" ? "error" : "warn"}">${sev}</td><td>${esc(i.file)}${i.line ? `:${i.line}` : ""}</td>
      <td><code>${esc(i.field)}</code></td><td>${esc(i.message)}</td></tr>`).join("")}</tbody></table>` : "";
  const splits = Object.entries(report.stats.splits || {}).map(([name, s]) => `<h2>${esc(name)}: ${s.rows} rows
      (${esc(s.format)})</h2><p>Tokens per row: min ${s.tokens.min}, median ${s.tokens.median}, p95 ${s.tokens.p95},
      max ${s.tokens.max}; ${s.trained_tokens} trained; ${s.over_max_seq_tokens} over max_seq_tokens
      ${report.stats.max_seq_tokens}.</p>${histogram(s.histogram)}`).join("");
  const previews = (report.previews || []).map((p) => `<h3>${esc(p.source)}</h3><pre class="preview">${
    p.segments.map(([text, trained, cut]) => (trained ? `<mark>${esc(text)}</mark>` : `<span class="untrained">${esc(text)}</span>`)
      + (cut ? `<span class="cut">✂ cut at max_seq_tokens</span>` : "")).join("")}</pre>`).join("");
  return head + table + splits + (previews ? `<h2>First examples (trained tokens highlighted)</h2>${previews}` : "");
}

function histogram(h) {
  if (!h || !h.counts.length) return "";
  const top = Math.max(...h.counts), [w, ht] = [600, 140], bw = w / h.counts.length;
  const bars = h.counts.map((c, k) => `<rect x="${k * bw + 1}" y="${ht - 20 - (c / top) * (ht - 30)}" width="${bw - 2}"
    height="${(c / top) * (ht - 30)}" fill="#1f5fa8"><title>${h.edges[k]}–${h.edges[k + 1]} tokens: ${c} rows</title></rect>`);
  return `<svg class="chart" style="height:140px" viewBox="0 0 ${w} ${ht}" role="img"
    aria-label="token-length histogram, 0 to ${h.edges[h.edges.length - 1]} tokens">${bars.join("")}
    <text x="0" y="${ht - 4}" font-size="12">0</text><text x="${w - 40}" y="${ht - 4}" font-size="12">${h.edges[h.edges.length - 1]}</text></svg>`;
}

// --- Train and a job's live view -------------------------------------------------------------------

async function trainPage(_, params) {
  const [form, files, health] = await Promise.all([api("/ui/api/train-form"), api("/v1/files?purpose=fine-tune"),
                                                   api("/health")]);
  if (!files.data.length) {
    render(`<h1>Train</h1><p>No training file yet: <a href="#/data">upload one on the Data page</a>.</p>`);
    return;
  }
  const chosen = params.get("file") || files.data[files.data.length - 1].id;
  const field = (f) => `<label for="f-${f.name}">${esc(f.name)}</label>
    <input id="f-${f.name}" name="${f.name}" type="number" step="any" min="0" value="${f.value ?? ""}"
      placeholder="auto" aria-describedby="h-${f.name}"><p class="help" id="h-${f.name}">${esc(f.help)}</p>`;
  const objective = form.objectives.find((o) => o.name === params.get("objective")) || form.objectives[0];
  render(`<h1>Train</h1><form id="train" class="grid">
    <label for="f-file">training_file</label><select id="f-file">${files.data.map((f) => `<option value="${f.id}"
      ${f.id === chosen ? "selected" : ""}>${esc(f.filename)} (${f.id})</option>`).join("")}</select>
    <label for="f-objective">objective</label><select id="f-objective" aria-describedby="h-objective">${
      form.objectives.map((o) => `<option value="${o.name}" ${o === objective ? "selected" : ""}>${o.name}</option>`).join("")}
    </select><p class="help" id="h-objective">sft learns the answers (method supervised); dpo prefers the chosen
      answer of preference rows (method dpo); grpo samples answers to RFT prompts and learns from the grader's
      rewards (method reinforcement). Peak learning rate <span id="peak-lr"></span>.</p>
    <label for="f-suffix">suffix</label><input id="f-suffix" type="text" pattern="[A-Za-z0-9_\\-]{1,64}"
      aria-describedby="h-suffix"><p class="help" id="h-suffix">Part of the tuned model's name, ft:BASE:SUFFIX:JOB.</p>
    ${form.fields.map(field).join("")}<div id="objective-fields" style="display: contents"></div>
    <span></span><div><button id="start">Start training ${esc(health.model)}</button></div></form>
    <p id="train-error" class="error" role="alert"></p>
    <h2>Settings every job shares (the server's --config)</h2><table><tbody>${form.settings.map((s) => `<tr>
      <th scope="row">${esc(s.key)}</th><td>${fmt(s.value)}</td><td class="muted">${esc(s.help)}</td></tr>`).join("")}
    </tbody></table><div id="grpo-settings"></div>`);
  const current = () => form.objectives.find((o) => o.name === $("f-objective").value);
  const show = async () => {
    const o = current();
    $("peak-lr").textContent = fmt(o.lr, 8);
    $("objective-fields").innerHTML = o.fields.map(field).join("") + (o.name === "grpo" ? `<div id="grader-editor"
      style="display: contents"></div>` : "");
    $("grpo-settings").innerHTML = o.name !== "grpo" ? "" : `<h2>GRPO settings (the server's --config grpo: section)</h2>
      <table><tbody>${form.grpo_settings.map((s) => `<tr><th scope="row">${esc(s.key)}</th><td>${fmt(s.value)}</td>
      <td class="muted">${esc(s.help)}</td></tr>`).join("")}</tbody></table>`;
    if (o.name === "grpo") await graderEditor($("grader-editor"), $("f-file").value, form.grader);
  };
  $("f-objective").onchange = () => show().catch(failed);
  $("f-file").onchange = () => (current().name === "grpo" ? show().catch(failed) : null);
  await show();
  $("train").onsubmit = async (e) => {
    e.preventDefault();
    const o = current(), hyperparameters = {};
    for (const f of [...form.fields, ...o.fields]) {
      const value = $(`f-${f.name}`).value;
      if (value !== "" && f.name !== "seed") hyperparameters[f.name] = Number(value);
    }
    const seed = $("f-seed").value, suffix = $("f-suffix").value;
    try {
      const method = o.name === "grpo" ? { type: o.method, [o.method]: { grader: readGrader(), hyperparameters } }
        : { type: o.method, [o.method]: { hyperparameters } };
      const job = await post("/v1/fine_tuning/jobs", { model: health.model, training_file: $("f-file").value,
        method, ...(seed !== "" ? { seed: Number(seed) } : {}), ...(suffix ? { suffix } : {}) });
      location.hash = `#/job/${job.id}`;
    } catch (err) { $("train-error").textContent = err.message; }
  };
}

function jobPage(jobId) {
  render(`<h1>Job <code>${esc(jobId)}</code></h1><div id="job" aria-live="polite"></div>
    <div class="row"><button id="cancel" class="secondary" hidden>Cancel</button></div>
    <h2 id="curve-title">Loss</h2><div id="curve"></div><h2>Forgetting probes</h2><div id="probes"></div>
    <h2>Events</h2><ol id="events" reversed></ol>`);
  $("cancel").onclick = () => post(`/v1/fine_tuning/jobs/${jobId}/cancel`, {}).catch(failed);
  poll(async () => {
    const [job, events] = await Promise.all([api(`/v1/fine_tuning/jobs/${jobId}`), allEvents(jobId)]);
    const steps = events.filter((e) => e.data && e.data.train_loss !== undefined && e.message.startsWith("Step "));
    const valid = events.filter((e) => e.data && e.data.valid_loss !== undefined && e.message.includes("validation"));
    const last = steps[steps.length - 1];
    const eta = job.estimated_finish && ACTIVE.includes(job.status)
      ? `, finishing about ${new Date(job.estimated_finish * 1000).toLocaleTimeString()}` : "";
    $("job").innerHTML = `<p>Status: <strong id="status" class="${job.status === "failed" ? "error" : ""}">${job.status}</strong>
      ${last ? `— step <span id="step">${last.data.step}</span>/${last.data.total_steps}, ${job.trained_tokens || 0} tokens${
        last.data.tokens_per_s ? `, <span id="tokens-per-s">${Math.round(last.data.tokens_per_s)}</span> tokens/s` : ""}${eta}` : ""}</p>
      ${job.error ? `<p class="error" role="alert">${esc(job.error.message)}</p>` : ""}
      ${job.status === "succeeded" ? `<p><a href="#/report/${jobId}">Open the report</a> ·
        <a href="#/play?model=${encodeURIComponent(job.fine_tuned_model)}">Chat with ${esc(job.fine_tuned_model)}</a> ·
        <a href="#/export/${jobId}">Export</a></p>` : ""}`;
    $("cancel").hidden = !ACTIVE.includes(job.status);
    if (job.method.type === "reinforcement") { // GRPO's loss says little: its rewards are the curve
      const held = events.filter((e) => e.data && e.data.reward_sampled !== undefined);
      $("curve-title").textContent = "Reward";
      $("curve").innerHTML = chart([{ name: "sampled reward", cls: "train", points: steps.map((e) => [e.data.step, e.data.reward]) },
                                    { name: "held-out reward", cls: "valid", points: held.map((e) => [e.data.step, e.data.reward]) }]);
    } else {
      $("curve").innerHTML = chart([{ name: "training loss", cls: "train", points: steps.map((e) => [e.data.step, e.data.train_loss]) },
                                    { name: "validation loss", cls: "valid", points: valid.map((e) => [e.data.step, e.data.valid_loss]) }]);
    }
    const probes = events.filter((e) => e.data && e.data.within_budget !== undefined && e.data.probes);
    $("probes").innerHTML = probes.length ? `<ul>${probes.map((e) => `<li class="${e.data.within_budget ? "ok" : "error"}">
      ${esc(e.message)}</li>`).join("")}</ul>` : `<p class="muted">None measured during this run.</p>`;
    $("events").innerHTML = events.slice(-12).reverse().map((e) => `<li>${esc(e.message)}</li>`).join("");
    return ACTIVE.includes(job.status);
  });
}

// --- Runs ------------------------------------------------------------------------------------------

async function runsPage(_, params) {
  if (params.get("a") && params.get("b")) return sideBySide(params.get("a"), params.get("b"));
  const [jobs, runs] = await Promise.all([api("/v1/fine_tuning/jobs?limit=100"), api("/ui/api/runs")]);
  if (!jobs.data.length) {
    render(`<h1>Runs</h1><p>No jobs yet: <a href="#/data">check a file</a>, then <a href="#/train">train</a>.</p>`);
    return;
  }
  render(`<h1>Runs</h1><table><thead><tr><th>Pick</th><th>Job</th><th>Model</th><th>Status</th>
    <th>Held-out loss (grpo: reward), base → tuned</th><th>Forgetting budget</th><th>Pages</th></tr></thead><tbody>${jobs.data.map((j) => {
      const s = (runs[j.id] || {}).summary, sign = j.method.type === "reinforcement" ? -1 : 1;
      const budget = !s ? "–" : s.within_budget === null || s.within_budget === undefined ? "not measured"
        : s.within_budget ? `<span class="ok">within</span>` : `<span class="error">over</span>`;
      return `<tr><td><input type="checkbox" class="pick" value="${j.id}" aria-label="pick ${j.id}"></td>
        <td><a href="#/job/${j.id}">${j.id}</a></td><td>${esc(j.fine_tuned_model || j.model)}</td>
        <td class="${j.status === "failed" ? "error" : ""}">${j.status}</td>
        <td class="num">${s ? `${fmt(sign * s.base_val_loss)} → ${fmt(sign * s.final_val_loss)}` : "–"}</td><td>${budget}</td>
        <td>${j.status === "succeeded" ? `<a href="#/report/${j.id}">report</a> · <a href="#/compare/${j.id}">compare</a>
          · <a href="#/export/${j.id}">export</a>` : ""}</td></tr>`;
    }).join("")}</tbody></table>
    <div class="row"><button id="side-by-side" disabled>Compare the two picked runs side by side</button>
      <span class="muted" id="pick-help">Pick two runs.</span></div>`);
  const picked = () => [...document.querySelectorAll("input.pick:checked")].map((c) => c.value);
  for (const box of document.querySelectorAll("input.pick")) {
    box.onchange = () => { $("side-by-side").disabled = picked().length !== 2; };
  }
  $("side-by-side").onclick = () => { const [a, b] = picked(); location.hash = `#/runs?a=${a}&b=${b}`; };
}

// --- Report ----------------------------------------------------------------------------------------

async function reportPage(jobId) {
  if (!jobId) return pickJob("Report", "report");
  const run = await api(`/ui/api/jobs/${jobId}/run`);
  const ev = run.eval, s = run.summary;
  const head = `<h1>Report <code>${esc(jobId)}</code></h1>`;
  if (!ev) {
    render(head + `<p>This run has no forgetting report yet (the server evaluates each job when it succeeds,
      unless started with --no-eval).</p>${s ? `<p>Held-out loss ${fmt(s.base_val_loss)} → ${fmt(s.final_val_loss)}.</p>` : ""}`);
    return;
  }
  const table = (caption, rows) => `<table><caption>${caption}</caption><thead><tr><th>Metric</th><th>Base</th>
    <th>Tuned</th><th>Change</th><th>95% CI of change</th><th>n</th></tr></thead><tbody>${rows}</tbody></table>`;
  const samples = (ev.task.samples || []).map((x) => `<tr><td>${esc(x.prompt)}</td><td>${esc(x.reference)}</td>
    <td>${esc(x.base)}</td><td>${esc(x.tuned)}</td></tr>`).join("");
  render(head + `<div class="verdict ${ev.within_budget ? "good" : "bad"}" id="verdict">${ev.verdict.split("\n")
      .map((l) => `<p>${esc(l)}</p>`).join("")}</div>
    ${table("Task: held-out data", metricRows(ev.task))}${table("General abilities (forgetting probes)", metricRows(ev.general))}
    <h2>Forgetting budget</h2><ul>${ev.budget_checks.map((c) => `<li class="${c.ok ? "ok" : "error"}">${c.ok ? "✓" : "✗"}
      ${esc(c.text)}</li>`).join("")}</ul><div id="figures"></div>
    ${samples ? `<h2>Held-out questions: base and tuned answers</h2><table><thead><tr><th>Question</th><th>Reference</th>
      <th>Base</th><th>Tuned</th></tr></thead><tbody>${samples}</tbody></table>` : ""}`);
  for (const name of run.figures) { // <img> cannot send the key: fetched, then shown from a blob
    const blob = await (await api(`/ui/api/jobs/${jobId}/figures/${name}`, { raw: true })).blob();
    $("figures").insertAdjacentHTML("beforeend", `<img class="figure" alt="${esc(name)}" src="${URL.createObjectURL(blob)}">`);
  }
}

// --- Playground ------------------------------------------------------------------------------------

async function playPage(_, params) {
  const [models, knowledge] = await Promise.all([api("/v1/models"), knowledgeOptions()]);
  const ids = models.data.map((m) => m.id);
  const tuned = params.get("model") || ids[ids.length - 1];
  const options = (chosen) => ids.map((m) => `<option ${m === chosen ? "selected" : ""}>${esc(m)}</option>`).join("");
  const pane = (side) => `<section class="pane" aria-label="${side} answer"><h2 id="${side}-name"></h2>
    <div id="${side}-answer" class="answer" aria-live="polite"></div><div id="${side}-passages"></div></section>`;
  render(`<h1>Playground</h1><form id="chat"><div class="pair">
      <div><label for="left">Left model</label> <select id="left">${options(ids[0])}</select></div>
      <div><label for="right">Right model</label> <select id="right">${options(tuned)}</select></div></div>
    <p><label for="system">System prompt (both models; empty: the server's)</label><textarea id="system" rows="2"></textarea></p>
    <p><label for="message">Message</label><textarea id="message" rows="3" required></textarea></p>
    <div class="row"><label for="max-tokens">max_tokens</label><input id="max-tokens" type="number" min="1" value="64">
      <label for="knowledge">Retrieval</label><select id="knowledge" aria-describedby="knowledge-help">
        <option value="own">each model's own</option><option value="none">none</option>${knowledge}</select>
      <button id="send">Send to both</button></div>
    <p class="help muted" id="knowledge-help">Each model's own: a job trained with <code>retrieval:</code> answers from
      its knowledge source with its own settings, as the server's chat does; other models without passages. A
      knowledge file: its passages go into both prompts (as <code>tunesmith chat --knowledge</code> does). A cited
      passage <code>[2]</code> is shown as its source.</p></form>
    <div class="pair">${pane("left")}${pane("right")}</div>`);
  $("chat").onsubmit = (e) => {
    e.preventDefault();
    const messages = [...($("system").value ? [{ role: "system", content: $("system").value }] : []),
                      { role: "user", content: $("message").value }];
    for (const side of ["left", "right"]) {
      $(`${side}-name`).textContent = $(side).value;
      answer($(side).value, messages, Number($("max-tokens").value), $("knowledge").value, side);
    }
  };
}

// One side's answer: with the model's own retrieval the server's chat puts the passages in and writes a
// cited [2] as its source, streamed too; with a knowledge file the page puts them in, as that model
// answers (a RAFT job's prompt), and asks the server for none of its own.
async function answer(model, messages, maxTokens, choice, side) {
  const out = $(`${side}-answer`), shown = $(`${side}-passages`);
  shown.innerHTML = "";
  let ask = { model, messages, max_tokens: maxTokens, stream: true }, sources = [];
  if (choice !== "own") ask.retrieval = false;
  if (choice !== "none") {
    try {
      const found = await post("/ui/api/retrieve", { model, messages, max_tokens: maxTokens,
                                                     ...(choice === "own" ? {} : { knowledge: choice }) });
      if (choice !== "own") { ask.messages = found.messages; sources = found.cite ? found.sources : []; }
      if (found.passages.length) {
        shown.innerHTML = `<h3>Passages used</h3><ol class="passage-list" id="${side}-passage-list">${found.passages
          .map((p) => `<li><span class="muted">${esc(p.source.split("/").pop())}</span> ${esc(p.text)}</li>`).join("")}</ol>`;
      }
    } catch (err) {
      out.textContent = `Retrieval failed: ${err.message}`;
      out.classList.add("error");
      return;
    }
  }
  await stream(ask, out);
  if (sources.length) out.textContent = out.textContent.replace(/\[(\d{1,3})\]/g, (m, n) => (sources[n - 1] ? `[${sources[n - 1]}]` : m));
  out.dataset.done = "true";
}

async function stream(ask, out) { // chat completions with stream=true, read as SSE
  out.textContent = "";
  out.classList.remove("error");
  delete out.dataset.done;
  try {
    const response = await api("/v1/chat/completions", { method: "POST", raw: true,
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(ask) });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      const lines = buffer.split("\n");
      buffer = lines.pop();
      for (const line of lines) {
        if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
        const delta = JSON.parse(line.slice(6)).choices[0]?.delta?.content;
        if (delta) out.textContent += delta;
      }
    }
  } catch (err) { out.textContent = err.message; out.classList.add("error"); }
}

// --- routing ---------------------------------------------------------------------------------------

const PAGES = { data: dataPage, train: trainPage, job: jobPage, runs: runsPage, report: reportPage,
                compare: comparePage, play: playPage, export: exportPage };

async function route() {
  stopPolling();
  const [path, query] = location.hash.slice(2).split("?");
  const [name, arg] = path.split("/");
  const page = PAGES[name] ? name : "data";
  for (const a of document.querySelectorAll("nav a")) {
    const current = a.getAttribute("href") === `#/${page}` || (page === "job" && a.getAttribute("href") === "#/runs");
    current ? a.setAttribute("aria-current", "page") : a.removeAttribute("aria-current");
  }
  document.title = `tunesmith — ${page}`;
  try {
    await PAGES[page](arg, new URLSearchParams(query || ""));
  } catch (err) { failed(err); }
  // The first page drawn with the server's figures: what the first-load measure (tests/test_ui.py) times.
  if (!performance.getEntriesByName("tunesmith-ready").length) performance.mark("tunesmith-ready");
}

function start() {
  const key = location.hash.match(/key=([^&]+)/); // `tunesmith ui` opens /#key=KEY: the fragment never leaves the browser
  if (key) {
    sessionStorage.setItem(KEY, decodeURIComponent(key[1]));
    history.replaceState(null, "", "#/data");
  }
  api("/health").then((h) => { $("server").textContent = `${h.model} · ${location.host}`; }).catch(() => {});
  window.addEventListener("hashchange", route);
  route();
}

start();
