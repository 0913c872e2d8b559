// The Train page's grader editor (objective grpo): the grader as JSON in a textarea, and a button that
// grades an answer against a row of the chosen file through the server's graders/run, as training would
// (the row without its answer is the grader's `item`; its answer, if it has one, the starting sample).

import { $, api, esc, fmt, post } from "./core.js";

// A row as the grader reads it: its messages up to the last user turn, and the answer it held after it.
function split(row) {
  const messages = Array.isArray(row.messages) ? [...row.messages] : null;
  let answer = "";
  while (messages && messages.length && messages[messages.length - 1].role === "assistant") {
    const last = messages.pop(); // the first popped is the row's last answer
    if (!answer && typeof last.content === "string") answer = last.content;
  }
  return { item: messages ? { ...row, messages } : row, answer };
}

// The starting grader with its reference on a field the sample rows have (the first besides messages).
function starting(grader, rows) {
  const field = rows.length ? Object.keys(rows[0].row).find((k) => k !== "messages") : null;
  return field ? { ...grader, reference: `{{item.${field}}}` } : grader;
}

export async function graderEditor(container, fileId, grader) {
  const rows = (await api(`/ui/api/files/${fileId}/rows`)).rows;
  container.innerHTML = `<label for="f-grader">grader</label><div>
      <textarea id="f-grader" rows="8" spellcheck="false" aria-describedby="h-grader">${
        esc(JSON.stringify(starting(grader, rows), null, 2))}</textarea>
      <p class="help" id="h-grader">OpenAI's grader JSON (string_check, text_similarity, score_model, multi; python
        only on a server started with --allow-python-graders). Each sampled answer is <code>{{sample.output_text}}</code>,
        its row <code>{{item.…}}</code>.</p></div>
    <label for="f-row">sample row</label><select id="f-row">${rows.map((r, k) => `<option value="${k}">line ${r.line}: ${
      esc(JSON.stringify(r.row).slice(0, 90))}</option>`).join("")}</select>
    <label for="f-sample">sample answer</label><textarea id="f-sample" rows="2"
      aria-describedby="h-sample"></textarea><p class="help" id="h-sample">The answer to grade: the row's own
      answer when it has one; type what the model might say.</p>
    <span></span><div><button type="button" id="run-grader" class="secondary">Run the grader on this row</button>
      <div id="grader-result" aria-live="polite"></div></div>`;
  const pick = () => { $("f-sample").value = rows.length ? split(rows[$("f-row").value].row).answer : ""; };
  $("f-row").onchange = pick;
  pick();
  $("run-grader").onclick = () => runGrader(rows);
}

export function readGrader() { // the editor's grader, or an Error naming the JSON problem
  try {
    return JSON.parse($("f-grader").value);
  } catch (err) {
    throw new Error(`The grader is not valid JSON: ${err.message}`);
  }
}

async function runGrader(rows) {
  const out = $("grader-result");
  out.innerHTML = "<p>Grading…</p>";
  try {
    const row = rows.length ? split(rows[$("f-row").value].row).item : {};
    const ran = await post("/v1/fine_tuning/alpha/graders/run", { grader: readGrader(),
                                                                   model_sample: $("f-sample").value, item: row });
    const subs = Object.entries(ran.sub_rewards || {});
    const errors = ran.metadata.error_messages || [];
    out.innerHTML = `<p role="status">Reward <strong id="grader-reward">${fmt(ran.reward)}</strong>${subs.length
      ? ` (${subs.map(([k, v]) => `${esc(k)} ${fmt(v)}`).join(", ")})` : ""}</p>${errors.length
      ? `<ul class="error">${errors.map((e) => `<li>${esc(e)}</li>`).join("")}</ul>` : ""}`;
  } catch (err) {
    out.innerHTML = `<p class="error" role="alert">${esc(err.message)}</p>`;
  }
}
