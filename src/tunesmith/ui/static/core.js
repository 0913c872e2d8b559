// What every page module shares: the API client (the key, errors, the server-gone banner), escaping and
// number formatting, rendering into <main>, and the open page's polling.

export const main = document.getElementById("main");
export const KEY = "tunesmith-api-key";
export const ACTIVE = ["validating_files", "queued", "running"];
let timer = null; // the open page's polling, stopped when the page changes
export const stopPolling = () => clearTimeout(timer);

// --- talking to the server -------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = `Bearer ${key}`;
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (err) {
    document.getElementById("gone").hidden = false; // fetch itself failed: nothing is listening
    throw new ApiError(0, "the server is not answering");
  }
  document.getElementById("gone").hidden = true;
  if (response.status === 401) { askForKey(); throw new ApiError(401, "an API key is needed"); }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new ApiError(response.status, (body.error && body.error.message) || response.statusText);
  }
  return options.raw ? response : response.json();
}

export const post = (path, body) => api(path, { method: "POST", body: JSON.stringify(body),
                                         headers: { "Content-Type": "application/json" } });

export function askForKey() {
  render(`<h1>API key</h1><form id="key-form" class="row"><label for="key">This server asks for its API key</label>
    <input id="key" type="password" autocomplete="off" required><button>Use it</button></form>`);
  document.getElementById("key-form").onsubmit = (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY, document.getElementById("key").value);
    window.dispatchEvent(new HashChangeEvent("hashchange")); // the page the key was asked on, again
  };
}

// --- small helpers ---------------------------------------------------------------------------------

export const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
export const fmt = (x, digits = 4) => (x === null || x === undefined ? "–" : typeof x === "number" ? +x.toFixed(digits) : esc(x));
export const $ = (id) => document.getElementById(id);
export function render(html) { main.innerHTML = html; }
export function failed(err) {
  if (err.status === 401) return;
  render(`<p class="error" role="alert">${esc(err.message)}</p>`);
}
export function poll(fn, ms = 1000) {
  const tick = async () => {
    let again = true;
    try { again = await fn(); } catch (err) { if (err.status !== 0) throw err; } // server gone: keep trying
    if (again !== false) timer = setTimeout(tick, ms);
  };
  clearTimeout(timer); // one page, one poll
  timer = setTimeout(tick, 0);
}


export async function pickJob(title, page) { // the Report and Export pages without a job: the succeeded ones
  const jobs = (await api("/v1/fine_tuning/jobs?limit=100")).data.filter((j) => j.status === "succeeded");
  render(`<h1>${title}</h1>${jobs.length ? `<ul>${jobs.map((j) => `<li><a href="#/${page}/${j.id}">${esc(j.fine_tuned_model)}</a></li>`).join("")}</ul>`
    : `<p>No job has succeeded yet: <a href="#/train">start one</a>.</p>`}`);
}

export function metricRows(metrics) {
  return Object.entries(metrics).filter(([, m]) => m && typeof m === "object" && "base" in m).map(([name, m]) => `<tr>
    <th scope="row">${esc(name)}</th><td class="num">${fmt(m.base)}</td><td class="num">${fmt(m.tuned)}</td>
    <td class="num">${fmt(m.delta)}</td><td class="num">${m.ci95 ? `[${fmt(m.ci95[0])}, ${fmt(m.ci95[1])}]` : "–"}</td>
    <td>${m.n ?? ""}</td></tr>`).join("");
}

export async function saveBlob(path, name) { // a download link cannot send the key: fetched, then saved from a blob
  const blob = await (await api(path, { raw: true })).blob();
  const link = Object.assign(document.createElement("a"), { href: URL.createObjectURL(blob), download: name });
  link.click();
}

// A knowledge source's <option>s: every uploaded file, and each succeeded job's training file (by its job id).
export async function knowledgeOptions(chosen = "") {
  const [files, jobs] = await Promise.all([api("/v1/files?purpose=fine-tune"), api("/v1/fine_tuning/jobs?limit=100")]);
  const option = (value, text) => `<option value="${value}" ${value === chosen ? "selected" : ""}>${esc(text)}</option>`;
  return files.data.map((f) => option(f.id, `${f.filename} (${f.id})`)).join("")
    + jobs.data.filter((j) => j.status === "succeeded").map((j) => option(j.id, `training data of ${j.id}`)).join("");
}
