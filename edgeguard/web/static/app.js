// EdgeGuard web page: uploads (drag and drop or the file picker), progress, results and
// the daemon's status. Plain DOM, no libraries; text is always set with textContent.
"use strict";

(function () {
  const MB = 1024 * 1024;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const maxMb = Number(document.body.dataset.maxMb);
  const maxFiles = Number(document.body.dataset.maxFiles);
  const PARALLEL = 2;

  const drop = document.getElementById("drop");
  const picker = document.getElementById("picker");
  const list = document.getElementById("uploads");
  const resultsBox = document.getElementById("results");

  const rows = new Map(); // server id -> row
  const waiting = []; // {file, row} not sent yet
  let sending = 0;
  let resultsKey = "";

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  function resultUrl(path, download) {
    const parts = path.split("/").map(encodeURIComponent).join("/");
    return "/results/" + parts + (download ? "?download=1" : "");
  }

  function signedOut(resp) {
    if (resp.status === 401) {
      window.location.assign("/login");
      return true;
    }
    return false;
  }

  // -- rows ------------------------------------------------------------------------------

  function newRow(name) {
    const empty = list.querySelector(".empty");
    if (empty) empty.remove();
    const li = el("li", "item");
    const thumb = el("div", "thumb");
    const body = el("div", "body");
    const title = el("div", "name", name);
    const detail = el("div", "detail");
    body.append(title, detail);
    const state = el("span", "state");
    li.append(thumb, body, state);
    list.prepend(li);
    return { li, thumb, detail, state, status: "" };
  }

  function setState(row, status, text) {
    row.status = status;
    row.li.dataset.status = status;
    row.state.className = "state " + status;
    row.state.textContent = text || status;
  }

  function setReason(row, reason) {
    row.detail.replaceChildren(el("div", "reason", reason));
  }

  function showDone(row, output) {
    setState(row, "done", "redacted");
    const img = el("img", "thumb");
    img.alt = "redacted " + output;
    img.loading = "lazy";
    img.src = resultUrl(output, false);
    row.thumb.replaceWith(img);
    row.thumb = img;
    const actions = el("div", "actions");
    const view = el("a", "view", "View");
    view.href = resultUrl(output, false);
    view.target = "_blank";
    view.rel = "noopener";
    const dl = el("a", "download", "Download");
    dl.href = resultUrl(output, true);
    dl.setAttribute("download", output.split("/").pop());
    actions.append(view, dl);
    row.detail.replaceChildren(el("div", "muted", "redacted copy: " + output), actions);
  }

  function applyServer(row, u) {
    if (u.status === "done" && row.status !== "done") {
      showDone(row, u.output);
      loadResults();
      loadStatus();
    } else if (u.status === "failed" || u.status === "refused") {
      if (row.status !== u.status) loadStatus();
      setState(row, u.status);
      setReason(row, u.reason || "waiting for the daemon's reason…");
    } else if (u.status === "queued" && row.status !== "queued") {
      setState(row, "queued", "redacting…");
      row.detail.replaceChildren(el("div", "muted", "in the inbox as " + u.name));
    }
  }

  // -- sending ---------------------------------------------------------------------------

  function tooLarge(size) {
    return "too large: " + (size / MB).toFixed(1) + " MB; the limit is " + maxMb +
      " MB per photo";
  }

  function enqueue(files) {
    const all = Array.from(files);
    all.forEach(function (file, i) {
      const row = newRow(file.name);
      if (i >= maxFiles) {
        setState(row, "refused");
        setReason(row, "too many photos in one upload: at most " + maxFiles);
      } else if (file.size > maxMb * MB) {
        setState(row, "refused");
        setReason(row, tooLarge(file.size));
      } else {
        setState(row, "waiting");
        waiting.push({ file, row });
      }
    });
    pump();
  }

  function pump() {
    while (sending < PARALLEL && waiting.length) {
      const job = waiting.shift();
      sending += 1;
      send(job.file, job.row).finally(function () {
        sending -= 1;
        pump();
        poll();
      });
    }
  }

  function send(file, row) {
    return new Promise(function (resolve) {
      const xhr = new XMLHttpRequest();
      const bar = el("progress");
      bar.max = 100;
      bar.value = 0;
      row.detail.replaceChildren(bar);
      setState(row, "uploading", "uploading");
      xhr.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) bar.value = Math.round((100 * e.loaded) / e.total);
      });
      xhr.addEventListener("load", function () {
        if (xhr.status === 401) {
          window.location.assign("/login");
          return resolve();
        }
        let data = null;
        try {
          data = JSON.parse(xhr.responseText);
        } catch (err) {
          data = null;
        }
        const u = data && data.results && data.results[0];
        if (u) {
          if (u.status === "queued") rows.set(u.id, row);
          applyServer(row, u);
        } else {
          setState(row, "refused");
          setReason(row, (data && data.error) || "upload failed (HTTP " + xhr.status + ")");
        }
        resolve();
      });
      xhr.addEventListener("error", function () {
        setState(row, "refused", "failed");
        setReason(row, "upload failed: the connection was lost");
        resolve();
      });
      const form = new FormData();
      form.append("file", file, file.name);
      xhr.open("POST", "/api/upload");
      xhr.setRequestHeader("X-CSRF-Token", csrf);
      xhr.send(form);
    });
  }

  // -- polling ---------------------------------------------------------------------------

  let pollTimer = null;

  function pending() {
    for (const row of rows.values()) {
      if (row.status === "queued") return true;
    }
    return sending > 0;
  }

  async function poll() {
    clearTimeout(pollTimer);
    try {
      const resp = await fetch("/api/uploads", { cache: "no-store" });
      if (signedOut(resp)) return;
      const data = await resp.json();
      for (const u of data.uploads) {
        const row = rows.get(u.id);
        if (row) applyServer(row, u);
      }
    } catch (err) {
      /* the next poll retries */
    }
    let again = pending();
    for (const row of rows.values()) {
      if (row.status === "failed" && row.detail.textContent.endsWith("…")) again = true;
    }
    pollTimer = setTimeout(poll, again ? 1000 : 5000);
  }

  function dd(dl, label, value) {
    dl.append(el("dt", null, label), el("dd", null, value));
  }

  function ms(v) {
    return v === null || v === undefined ? "–" : Math.round(v) + " ms";
  }

  async function loadStatus() {
    try {
      const resp = await fetch("/api/status", { cache: "no-store" });
      if (signedOut(resp)) return;
      const data = await resp.json();
      const d = data.daemon;
      const pill = document.getElementById("daemon-pill");
      pill.textContent = d.running ? "daemon running" : "daemon not running";
      pill.className = "pill " + (d.running ? "ok" : "bad");
      const counts = document.getElementById("counts");
      counts.replaceChildren();
      const c = d.counts || {};
      const n = function (k) { return c[k] === undefined ? "–" : String(c[k]); };
      dd(counts, "Processed", n("processed"));
      dd(counts, "Faces redacted", n("faces"));
      dd(counts, "Weak regions redacted", n("weak"));
      dd(counts, "Failed", n("failed"));
      dd(counts, "Queued", n("queued"));
      dd(counts, "In progress", n("in_flight"));
      const lat = d.latency_ms || {};
      dd(counts, "Latency p50", ms(lat.p50));
      dd(counts, "Latency p95", ms(lat.p95));
      if (d.outbox_blocked) dd(counts, "Outbox", "not writable, retrying");
      (d.videos || []).forEach(function (v) {
        const frames = v.frames_total ? v.frames_done + " of " + v.frames_total
          : String(v.frames_done || 0);
        const eta = v.eta_s === undefined || v.eta_s === null ? ""
          : ", about " + Math.round(v.eta_s) + " s left";
        dd(counts, "Video in progress", (v.name || "video") + ": " + frames + " frames, " +
           (v.fps || 0).toFixed(1) + " fps" + eta);
      });
      const cam = d.camera;
      const camText = !cam || cam.state === "off" || !cam.state ? "off"
        : (cam.camera || cam.source || "camera") + ": " + cam.state +
          (cam.fps ? ", " + Number(cam.fps).toFixed(1) + " fps" : "") +
          (cam.frames !== undefined ? ", " + cam.frames + " frames" : "") +
          (cam.last_error ? " (last error: " + cam.last_error + ")" : "");
      document.getElementById("camera").textContent = camText;
      const fl = document.getElementById("failures");
      fl.replaceChildren();
      const items = (data.failures || []).slice();
      if (d.last_error) items.push({ file: "daemon", reason: d.last_error, where: "last error" });
      if (!items.length) fl.append(el("li", "empty", "None."));
      for (const f of items) {
        const li = el("li");
        li.append(el("strong", null, f.file), document.createTextNode(" — "),
          el("span", "why", f.reason), el("div", "muted", f.where));
        fl.append(li);
      }
    } catch (err) {
      /* retried */
    }
  }

  async function loadResults() {
    try {
      const resp = await fetch("/api/results", { cache: "no-store" });
      if (signedOut(resp)) return;
      const data = await resp.json();
      const key = data.results.map(function (r) { return r.path + "@" + r.mtime; }).join("|");
      if (key === resultsKey) return;
      resultsKey = key;
      resultsBox.replaceChildren();
      if (!data.results.length) {
        resultsBox.append(el("p", "empty", "No redacted images yet."));
        return;
      }
      for (const r of data.results) {
        const fig = el("figure");
        const a = el("a");
        a.href = resultUrl(r.path, false);
        a.target = "_blank";
        a.rel = "noopener";
        const img = el("img");
        img.loading = "lazy";
        img.alt = r.path;
        img.src = resultUrl(r.path, false);
        a.append(img);
        const cap = el("figcaption");
        const dl = el("a", null, "Download");
        dl.href = resultUrl(r.path, true);
        dl.setAttribute("download", r.path.split("/").pop());
        cap.append(el("span", null, r.path), dl);
        fig.append(a, cap);
        resultsBox.append(fig);
      }
    } catch (err) {
      /* retried */
    }
  }

  // -- wiring ----------------------------------------------------------------------------

  ["dragenter", "dragover"].forEach(function (type) {
    drop.addEventListener(type, function (e) {
      e.preventDefault();
      drop.classList.add("over");
    });
  });
  ["dragleave", "drop"].forEach(function (type) {
    drop.addEventListener(type, function (e) {
      e.preventDefault();
      drop.classList.remove("over");
    });
  });
  drop.addEventListener("drop", function (e) {
    if (e.dataTransfer && e.dataTransfer.files.length) enqueue(e.dataTransfer.files);
  });
  // A file dropped beside the zone must not make the browser navigate away to it.
  window.addEventListener("dragover", function (e) { e.preventDefault(); });
  window.addEventListener("drop", function (e) { e.preventDefault(); });
  picker.addEventListener("change", function () {
    if (picker.files.length) enqueue(picker.files);
    picker.value = "";
  });

  loadStatus();
  loadResults();
  poll();
  setInterval(loadStatus, 3000);
  setInterval(loadResults, 15000);
})();
