// latentdirs explore: the page. Renders happen on the server; this file only builds the controls
// from /api/config and asks for the current view. At most one render request is in flight: while
// one runs, slider moves only update the wanted view, and when it returns the newest wanted view
// (if it differs) is sent — so dragging never queues renders. Text from files (labels, names) is
// only ever set as textContent or value, never parsed as HTML.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token");
const CLIENT = Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, "0")).join("");
const $ = (id) => document.getElementById(id);

const state = { file: 0, index: 0, strength: 0, config: null };
let inFlight = false;
let lastSent = null;
let shownUrl = null;

function withToken(path) {
  if (TOKEN === null) return path;
  return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN);
}

function viewFields() {
  const fields = { file: String(state.file), index: String(state.index), strength: String(state.strength) };
  const photo = $("photo").value;
  if (photo !== "") fields.photo = photo; else fields.seed = $("seed").value.trim();
  if ($("class").value !== "") fields["class"] = $("class").value;
  if ($("truncation").value.trim() !== "" && photo === "") fields.truncation = $("truncation").value.trim();
  const from = $("layer-from").value.trim(), to = $("layer-to").value.trim();
  if (!$("layers-box").hidden && from !== "" && to !== "") fields.layers = from + "-" + to;
  return fields;
}

function showError(text) { $("error").textContent = text; }

async function request() {
  const query = new URLSearchParams(viewFields()).toString();
  if (inFlight || query === lastSent) return;
  inFlight = true;
  lastSent = query;
  try {
    const response = await fetch(withToken("/api/render?" + query + "&client=" + CLIENT));
    if (response.status === 200) {
      const info = JSON.parse(response.headers.get("X-Render") || "{}");
      const url = URL.createObjectURL(await response.blob());
      const img = $("view");
      img.onload = () => { if (shownUrl && shownUrl !== url) URL.revokeObjectURL(shownUrl); shownUrl = url; };
      img.src = url;
      img.dataset.view = query;
      showError("");
      const units = currentFile().strength.units;
      $("status").textContent = `${info.label} at ${state.strength}${units ? " " + units : ""}` +
        (info.clamped ? " (clamped to the calibrated range)" : "") + ` · ${info.ms} ms`;
    } else if (response.status !== 204) {  // 204: replaced by a newer request of ours
      showError((await response.text()).trim());
      $("view").dataset.view = query;  // answered: a test or a person can tell it is done
    }
  } catch (error) {
    showError("Error: the explorer server is not reachable (" + error + ")");
  } finally {
    inFlight = false;
  }
  request();  // the view moved on while this one rendered: ask for the newest
}

function currentFile() { return state.config.files[state.file]; }

function formatValue(value) { return (value >= 0 ? "+" : "") + Number(value).toFixed(2); }

function setActive(file, index, strength) {
  for (const row of document.querySelectorAll(".direction")) {
    const mine = Number(row.dataset.file) === file && Number(row.dataset.index) === index;
    row.classList.toggle("active", mine);
    if (!mine) {  // one direction at a time: the view is exactly the tile `latentdirs edit` renders
      const slider = row.querySelector("input[type=range]");
      slider.value = "0";
      row.querySelector(".value").textContent = formatValue(0);
    }
  }
  state.file = file; state.index = index; state.strength = strength;
  const layered = currentFile().layered;
  $("layers-box").hidden = !layered;
  request();
}

function directionRow(fileIndex, file, direction) {
  const row = document.createElement("div");
  row.className = "direction";
  row.dataset.file = fileIndex; row.dataset.index = direction.index;
  const name = document.createElement("span");
  name.className = "name"; name.textContent = "d" + direction.index;
  const label = document.createElement("input");
  label.type = "text"; label.value = direction.label; label.placeholder = "label…"; label.maxLength = 200;
  label.id = `label-${fileIndex}-${direction.index}`; label.setAttribute("aria-label", "label of d" + direction.index);
  const button = document.createElement("button");
  button.type = "button"; button.textContent = "Label"; button.id = `label-button-${fileIndex}-${direction.index}`;
  const slider = document.createElement("input");
  slider.type = "range"; slider.id = `slider-${fileIndex}-${direction.index}`;
  slider.min = file.strength.min; slider.max = file.strength.max; slider.step = file.strength.step; slider.value = "0";
  slider.setAttribute("aria-label", "strength of " + (direction.label || "d" + direction.index));
  const value = document.createElement("span");
  value.className = "value"; value.textContent = formatValue(0);
  slider.addEventListener("input", () => {
    value.textContent = formatValue(slider.value);
    setActive(fileIndex, direction.index, Number(slider.value));
  });
  const submit = () => labelDirection(fileIndex, direction.index, label, button);
  button.addEventListener("click", submit);
  label.addEventListener("keydown", (event) => { if (event.key === "Enter") submit(); });
  row.append(name, label, button, slider, value);
  return row;
}

async function postJson(path, body) {
  const response = await fetch(withToken(path), {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(text.trim());
  return JSON.parse(text);
}

async function labelDirection(file, index, input, button) {
  button.disabled = true;
  try {
    const result = await postJson("/api/label", { file, index, name: input.value });
    input.value = result.labels[String(index)] || "";
    document.getElementById(`slider-${file}-${index}`).setAttribute("aria-label", "strength of " + (input.value || "d" + index));
    showError("");
    $("status").textContent = `d${index} labelled ${JSON.stringify(input.value)} in ${state.config.files[file].name}`;
    input.dataset.saved = input.value;
    lastSent = null;  // the label shows in the status of the next render
  } catch (error) {
    showError(error.message);
  } finally {
    button.disabled = false;
  }
}

async function save() {
  $("save").disabled = true;
  $("saved").textContent = "";
  try {
    const result = await postJson("/api/save", { ...viewFields(), folder: $("folder").value.trim() });
    showError("");
    $("saved").textContent = `wrote ${result.manifest.images.length} files and manifest.json into ` +
      `${state.config.save_dir}/${result.folder}; reproduce with:\n${result.command}`;
  } catch (error) {
    showError(error.message);
  } finally {
    $("save").disabled = !state.config.save;
  }
}

function build(config) {
  state.config = config;
  $("generator").textContent = `${config.generator.spec} · ${config.generator.resolution} px`;
  const area = $("directions");
  config.files.forEach((file, fileIndex) => {
    const heading = document.createElement("h2");
    heading.textContent = file.name + ` (${file.directions.length} directions in ${file.space})`;
    area.append(heading);
    if (file.strength.calibrated) {
      const note = document.createElement("p");
      note.className = "units";
      note.textContent = `calibrated: strengths are amounts of ${file.strength.factor} in ${file.strength.units}`;
      area.append(note);
    }
    for (const direction of file.directions) area.append(directionRow(fileIndex, file, direction));
  });
  if (config.generator.classes.length) {
    $("class-box").hidden = false;
    config.generator.classes.forEach((name, id) => $("class").append(new Option(`${id} ${name}`, String(id))));
  }
  if (config.photos.length) {
    $("photo-box").hidden = false;
    config.photos.forEach((name, row) => $("photo").append(new Option(name, String(row))));
  }
  $("save").disabled = !config.save;
  $("save-note").textContent = config.save ? `into ${config.save_dir}/FOLDER` : "Save is off: start with --save-dir DIR";
  for (const id of ["seed", "photo", "class", "truncation", "layer-from", "layer-to"]) {
    $(id).addEventListener("input", request);
    $(id).addEventListener("change", request);
  }
  $("random").addEventListener("click", () => {
    $("seed").value = String(crypto.getRandomValues(new Uint32Array(1))[0] % 2147483648);
    $("photo").value = "";
    request();
  });
  $("save").addEventListener("click", save);
  setActive(0, 0, 0);
}

fetch(withToken("/api/config"))
  .then((response) => (response.ok ? response.json() : response.text().then((t) => Promise.reject(new Error(t)))))
  .then(build)
  .catch((error) => showError(String(error.message || error)));
