// The pages over a finished run's long tasks and side-by-side views: Compare (fine-tuning vs RAG, run by
// the server in the background), Export (adapter, merged, GGUF + Modelfile with their parity figures),
// and two runs side by side. Every figure is read from the server's /ui/api routes.

import { $, api, esc, fmt, knowledgeOptions, pickJob, poll, post, render, saveBlob } from "./core.js";

const SYSTEMS = ["base", "base+rag", "tuned", "tuned+rag"];
const METRICS = ["token_f1", "rouge_l", "exact_match", "length_ratio", "style_match"];

function taskStatus(task, what) { // a background task's state, how long it has run, and the lines it logged
  if (!task) return `<p class="muted">No ${what} yet.</p>`;
  const seconds = Math.round(((task.finished || Date.now() / 1000) - task.started));
  const cls = { failed: "error", interrupted: "error", succeeded: "ok" }[task.state] || "";
  return `<p>${esc(what)}: <strong class="${cls} task-state">${task.state}</strong> (${seconds} s)</p>
    ${task.error ? `<p class="error" role="alert">${esc(task.error)}</p>` : ""}
    ${task.log.length ? `<pre class="preview task-log">${esc(task.log.join("\n"))}</pre>` : ""}`;
}

// --- Compare ---------------------------------------------------------------------------------------

const RATES = ["handoff_rate", "made_up_rate", "false_handoff_rate", "citation_accuracy"];

function compareTable(split) { // the content and form metrics, and the rates a split of a RAFT run reports
  const columns = [...METRICS, ...RATES.filter((m) => SYSTEMS.some((s) => split.systems[s][m]))];
  return `<table class="compare-table" data-split="${esc(split.name)}"><caption>${split.n} ${esc(split.description)}
    (value [95% CI])</caption><thead><tr><th>System</th>${columns.map((m) => `<th>${m}</th>`).join("")}</tr></thead>
    <tbody>${SYSTEMS.map((s) => `<tr><th scope="row">${s}</th>${columns.map((m) => {
      const x = split.systems[s][m];
      return x ? `<td class="num">${fmt(x.value, 3)} [${fmt(x.ci95[0], 3)}, ${fmt(x.ci95[1], 3)}]</td>` : "<td>–</td>";
    }).join("")}</tr>`).join("")}</tbody></table>`;
}

const CHARTS = [["token_f1", "Token F1 against the reference"], ["handoff_rate", "Hand-off rate"],
  ["made_up_rate", "Made-up rate: answered where no passage held the answer"],
  ["false_handoff_rate", "False hand-off rate: handed off where a passage held the answer"]];
const SYSTEM_COLORS = { base: "#9aa5ad", "base+rag": "#5b8fc9", tuned: "#d39b3a", "tuned+rag": "#1e6b35" };

// One metric per split per system as bars (0 to 1) with their 95% intervals as whiskers; the splits that
// report it only (the rates: a run trained with retrieval's found / missed / unanswerable).
function splitChart(splits, metric, title) {
  const shown = splits.filter(([, s]) => s.systems.base && s.systems.base[metric]);
  if (!shown.length) return "";
  const [w, h, pad, foot] = [720, 190, 34, 34];
  const group = (w - 2 * pad) / shown.length, bar = group / (SYSTEMS.length + 1), top = 12;
  const y = (v) => top + (1 - Math.max(0, Math.min(1, v))) * (h - top - foot);
  const bars = shown.map(([name, split], g) => SYSTEMS.map((system, k) => {
    const x = pad + g * group + (k + 0.5) * bar, m = split.systems[system][metric], v = m.value ?? 0;
    const [lo, hi] = m.ci95.map((c) => c ?? v);
    return `<rect class="bar" data-split="${esc(name)}" data-system="${system}" data-value="${m.value}" x="${x}"
      y="${y(v)}" width="${bar - 2}" height="${y(0) - y(v)}" fill="${SYSTEM_COLORS[system]}"><title>${esc(name)}, ${system}:
      ${fmt(m.value, 3)} [${fmt(lo, 3)}, ${fmt(hi, 3)}]</title></rect><line x1="${x + bar / 2 - 1}" x2="${x + bar / 2 - 1}"
      y1="${y(lo)}" y2="${y(hi)}" stroke="#1d2327"/>`;
  }).join("") + `<text x="${pad + g * group + group / 2}" y="${h - 12}" font-size="12" text-anchor="middle">${esc(name)}
    (${split.n})</text>`).join("");
  const axis = [0, 0.5, 1].map((t) => `<text x="${pad - 6}" y="${y(t) + 4}" font-size="11" text-anchor="end">${t}</text>
    <line x1="${pad}" x2="${w - pad}" y1="${y(t)}" y2="${y(t)}" stroke="#d5dbe0"/>`).join("");
  return `<figure class="split-chart" data-metric="${metric}"><figcaption>${esc(title)}, per split and system
    (bar: value, line: 95% interval)</figcaption><svg class="chart" viewBox="0 0 ${w} ${h}" role="img"
    aria-label="${esc(title)} per split and system">${axis}${bars}</svg></figure>`;
}

function compareResult(result) {
  if (!result) return "";
  const named = Object.entries(result.splits).filter(([name]) => name !== "all");
  const splits = named.map(([name, split]) => compareTable({ name, ...split })).join("");
  const charts = CHARTS.map(([metric, title]) => splitChart(named, metric, title)).join("");
  const legend = `<p class="legend">${SYSTEMS.map((s) => `<span><svg width="12" height="12" aria-hidden="true"><rect
    width="12" height="12" fill="${SYSTEM_COLORS[s]}"/></svg> ${s}</span>`).join("")}</p>`;
  const r = result.retrieval;
  return `<div class="verdict" id="recommendation"><p>${esc(result.recommendation)}</p></div>
    <div id="split-charts">${legend}${charts}</div>${splits}
    <p class="muted">Retrieval: ${r.passages} passages, top ${r.top_k}, prompts within ${r.prompt_budget_tokens} tokens;
      the answer was in a retrieved passage for ${fmt(100 * r.answer_found_rate, 1)}% of the questions.
      ${esc(result.created)}, ${fmt(result.seconds, 1)} s.</p>
    ${result.samples.length ? `<h2>Sample answers</h2><table><thead><tr><th>Question</th><th>Reference</th>${SYSTEMS
      .map((s) => `<th>${s}</th>`).join("")}</tr></thead><tbody>${result.samples.map((x) => `<tr><td>${esc(x.question)}</td>
      <td>${esc(x.reference)}</td>${SYSTEMS.map((s) => `<td>${esc(x[s])}</td>`).join("")}</tr>`).join("")}</tbody></table>` : ""}`;
}

export async function comparePage(jobId) {
  if (!jobId) return pickJob("Compare", "compare");
  const state = await api(`/ui/api/jobs/${jobId}/compare`);
  const knowledge = (state.own_knowledge ? `<option value="own" selected>the run's own: ${esc(state.own_knowledge
    .split("/").pop())} (trained with retrieval:)</option>` : "") + await knowledgeOptions(state.own_knowledge ? "" : jobId);
  const number = (name, help) => `<label for="c-${name}">${name}</label><input id="c-${name}" type="number" min="0"
    value="${state.defaults[name]}" aria-describedby="ch-${name}"><p class="help" id="ch-${name}">${help}</p>`;
  render(`<h1>Compare <code>${esc(jobId)}</code>: fine-tuning vs RAG</h1>
    <p>The base and the tuned model answer held-out questions, each with and without passages retrieved from a
      knowledge file (<code>tunesmith compare</code>); minutes on a real model, run by the server in the background.</p>
    <form id="compare" class="grid"><label for="c-knowledge">knowledge</label><select id="c-knowledge"
      aria-describedby="ch-knowledge">${knowledge}</select><p class="help" id="ch-knowledge">The file passages are
      retrieved from: a run trained with retrieval: its own knowledge source, with its settings; an upload; or a job's
      own training data.</p>
      ${number("limit", "Held-out questions answered.")}${number("seen", "Training questions answered (facts seen in training).")}
      ${number("max_new_tokens", "Longest answer.")}${number("top_k", "Passages retrieved per question.")}
      <span></span><div><button id="compare-start">Start the comparison</button></div></form>
    <p id="compare-error" class="error" role="alert"></p>
    <div id="compare-status" aria-live="polite"></div><div id="compare-result"></div>`);
  $("compare").onsubmit = async (e) => {
    e.preventDefault();
    $("compare-error").textContent = "";
    const body = { knowledge: $("c-knowledge").value };
    for (const name of Object.keys(state.defaults)) body[name] = Number($(`c-${name}`).value);
    try {
      await post(`/ui/api/jobs/${jobId}/compare`, body);
      follow();
    } catch (err) { $("compare-error").textContent = err.message; }
  };
  const follow = () => poll(async () => {
    const now = await api(`/ui/api/jobs/${jobId}/compare`);
    const running = now.task && now.task.state === "running";
    $("compare-start").disabled = running;
    $("compare-status").innerHTML = taskStatus(now.task, "comparison");
    $("compare-result").innerHTML = compareResult(now.result);
    return running;
  });
  follow();
}

// --- Export ----------------------------------------------------------------------------------------

function parity(task) {
  const r = task && task.state === "succeeded" && task.result;
  return r ? `<p class="parity">Parity with base + adapter on the sample prompts: max |Δ logit|
    <strong class="max-abs-diff">${r.max_abs_diff.toExponential(2)}</strong>, relative RMS
    <strong class="relative-diff">${r.relative_diff.toExponential(2)}</strong>.</p>` : "";
}

function exportSection(kind, state, types) {
  const s = state[kind], title = kind === "merged" ? "Merged model (Hugging Face safetensors)" : "GGUF + Ollama Modelfile";
  const type = kind === "gguf" ? `<label for="gguf-type">GGUF type</label><select id="gguf-type">${types.map((t) =>
    `<option>${t}</option>`).join("")}</select>` : "";
  return `<section id="export-${kind}" aria-labelledby="export-${kind}-title"><h2 id="export-${kind}-title">${title}</h2>
    <div class="row">${type}<button class="export-start" data-fmt="${kind}" ${s.task && s.task.state === "running"
      ? "disabled" : ""}>Export ${kind}</button></div>${taskStatus(s.task, `${kind} export`)}${parity(s.task)}
    ${s.files.length ? `<ul>${s.files.map((f) => `<li><button class="secondary download" data-fmt="${kind}"
      data-name="${esc(f.name)}">Download ${esc(f.name)}</button> <span class="muted">${
      f.bytes} bytes</span></li>`).join("")}</ul>` : ""}</section>`;
}

export async function exportPage(jobId) {
  if (!jobId) return pickJob("Export", "export");
  const run = await api(`/ui/api/jobs/${jobId}/run`);
  const head = `<h1>Export <code>${esc(jobId)}</code></h1>`;
  if (!run.adapter) return render(head + `<p>This job has no adapter: it has not succeeded.</p>`);
  render(head + `<h2>LoRA adapter</h2><p>peft's format (loadable by peft and vLLM).</p>
    <button id="adapter">Download the adapter (zip)</button><p id="export-error" class="error" role="alert"></p>
    <p>Merged weights and GGUF are written by the server in the background, then checked: the written files are
      loaded back and their logits compared with base + adapter (the parity figures).</p><div id="exports"></div>`);
  const download = (path, name) => saveBlob(path, name).catch((err) => { $("export-error").textContent = err.message; });
  $("adapter").onclick = () => download(`/ui/api/jobs/${jobId}/adapter.zip`, `${jobId}-adapter.zip`);
  const follow = () => poll(async () => {
    const state = await api(`/ui/api/jobs/${jobId}/exports`);
    const chosen = $("gguf-type") ? $("gguf-type").value : null;
    $("exports").innerHTML = exportSection("merged", state, []) + exportSection("gguf", state, state.gguf_types);
    if (chosen) $("gguf-type").value = chosen;
    for (const b of document.querySelectorAll("button.export-start")) {
      b.onclick = async () => {
        $("export-error").textContent = "";
        const body = b.dataset.fmt === "gguf" ? { gguf_type: $("gguf-type").value } : {};
        try { await post(`/ui/api/jobs/${jobId}/exports/${b.dataset.fmt}`, body); follow(); }
        catch (err) { $("export-error").textContent = err.message; }
      };
    }
    for (const b of document.querySelectorAll("button.download")) {
      b.onclick = () => download(`/ui/api/jobs/${jobId}/exports/${b.dataset.fmt}/${b.dataset.name}`, b.dataset.name);
    }
    return ["merged", "gguf"].some((f) => state[f].task && state[f].task.state === "running");
  });
  follow();
}

// --- two runs side by side -------------------------------------------------------------------------

export async function sideBySide(a, b) {
  const view = await api(`/ui/api/runs/side-by-side?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`);
  const runs = [view.a, view.b];
  const cells = (f) => runs.map((r) => `<td>${f(r)}</td>`).join("");
  const loss = (r) => (r.summary ? `${fmt(r.summary.base_val_loss)} → ${fmt(r.summary.final_val_loss)}` : "–");
  const budget = (r) => (!r.eval ? "not evaluated" : r.eval.within_budget ? `<span class="ok">within</span>`
    : `<span class="error">over</span>`);
  const names = [...new Set(runs.flatMap((r) => Object.keys((r.eval && r.eval.task) || {})
    .filter((k) => r.eval.task[k] && typeof r.eval.task[k] === "object" && "tuned" in r.eval.task[k])))];
  const metric = (name) => `<tr><th scope="row">${esc(name)}, tuned (change)</th>${cells((r) => {
    const m = r.eval && r.eval.task[name];
    return m ? `${fmt(m.tuned)} (${fmt(m.delta)})` : "–";
  })}</tr>`;
  render(`<h1>Two runs side by side</h1><p><a href="#/runs">Back to all runs</a></p>
    <table id="side-by-side-table"><thead><tr><th></th>${runs.map((r) => `<th><a href="#/report/${r.id}">${r.id}</a></th>`).join("")}
    </tr></thead><tbody><tr><th scope="row">Held-out loss, base → tuned</th>${cells(loss)}</tr>
    <tr><th scope="row">Forgetting budget</th>${cells(budget)}</tr>
    <tr><th scope="row">Verdict</th>${cells((r) => (r.eval ? esc(r.eval.verdict.split("\n")[0]) : "–"))}</tr>
    ${names.map(metric).join("")}</tbody></table>
    <h2>Settings that differ</h2>${view.differ.length ? `<table id="differ"><thead><tr><th>Setting</th><th>${a}</th>
      <th>${b}</th></tr></thead><tbody>${view.differ.map((d) => `<tr><th scope="row"><code>${esc(d.key)}</code></th>
      <td>${fmt(d.a)}</td><td>${fmt(d.b)}</td></tr>`).join("")}</tbody></table>` : `<p>None: the two runs were trained alike.</p>`}`);
}
