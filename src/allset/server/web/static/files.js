// allset web interface: uploads over tus with the vendored tus-js-client (static/vendor/,
// rebuilt by `./dev web-build`). Progressive enhancement: without this file the upload
// form posts multipart to /files-do/upload. Resumable logic is tus-js-client's own:
// fingerprints in localStorage let an upload cut by a dropped connection, a server
// restart or a page reload continue from the server's offset when the same file is
// chosen again. Every request carries the page's CSRF token (X-CSRF-Token).
"use strict";
(() => {
  const zone = document.getElementById("upload");
  if (!zone || !window.tus || !window.tus.isSupported) return;
  document.documentElement.classList.add("js-upload");

  const CHUNK = 4 * 1024 * 1024; // bytes per PATCH: each is durable before it is acknowledged
  const PARALLEL = 3;
  const words = JSON.parse(zone.dataset.words);
  const base = zone.dataset.folder || "/";
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const form = zone.querySelector("form");
  const queue = zone.querySelector(".queue");
  const all = zone.querySelector(".progress-all");
  const allBar = document.getElementById("overall-bar");
  const allText = document.getElementById("overall-text");
  const allSpeed = document.getElementById("overall-speed");
  const allDone = zone.querySelector(".alldone");
  const jobs = [];
  const madeDirs = new Set(["/"]);
  const samples = []; // [time ms, bytes sent in total] for the speed over the last seconds
  let running = 0;

  const t = (id, values) =>
    Object.entries(values || {}).reduce((s, [k, v]) => s.split(`{${k}}`).join(String(v)), words[id] || id);

  // The same units as the server's pages (core.units.format_size).
  function size(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return i ? `${n.toFixed(1)} ${units[i]}` : `${Math.round(n)} B`;
  }

  function duration(s) {
    if (s < 60) return t("unit.s", { n: Math.max(1, Math.round(s)) });
    if (s < 3600) return t("unit.min", { n: Math.round(s / 60) });
    return t("unit.h", { n: (s / 3600).toFixed(1) });
  }

  const joinPath = (folder, parts) =>
    "/" + [...folder.split("/"), ...parts].filter((x) => x).join("/");

  // ---- the overall figures ---------------------------------------------------------
  function totals() {
    let sent = 0;
    let total = 0;
    for (const j of jobs) {
      if (j.failed) continue;
      sent += j.sent;
      total += j.size;
    }
    return { sent, total };
  }

  function refresh() {
    const { sent, total } = totals();
    const percent = total ? Math.floor((100 * sent) / total) : 100;
    allBar.value = percent;
    allText.textContent = t("upload.progress", { percent, sent: size(sent), total: size(total) });
    const now = Date.now();
    samples.push([now, sent]);
    while (samples.length > 2 && now - samples[0][0] > 5000) samples.shift();
    const [t0, b0] = samples[0];
    const speed = now > t0 ? ((sent - b0) * 1000) / (now - t0) : 0;
    allSpeed.textContent =
      speed > 0 && sent < total
        ? t("upload.speed", { speed: size(speed), left: duration((total - sent) / speed) })
        : "";
    const finished = jobs.every((j) => j.done || j.failed);
    allDone.hidden = !finished;
    if (finished) allDone.querySelector("span").textContent = t("upload.alldone");
  }

  function show(job) {
    const percent = job.size ? Math.floor((100 * job.sent) / job.size) : 100;
    job.bar.value = job.done ? 100 : percent;
    if (job.done) job.status.textContent = t("upload.done");
    else if (!job.failed && job.started)
      job.status.textContent = t("upload.progress", { percent, sent: size(job.sent), total: size(job.size) });
    refresh();
  }

  // ---- errors in plain words ---------------------------------------------------------
  function isLockedBody(body) {
    return typeof body.type === "string" && body.type.endsWith("/resource-locked");
  }

  function bodyOf(err) {
    const res = err && err.originalResponse;
    try { return JSON.parse(res ? res.getBody() : "{}") || {}; } catch (_) { return {}; }
  }

  function reason(err) {
    const res = err && err.originalResponse;
    const status = res ? res.getStatus() : 0;
    let body = {};
    try { body = JSON.parse(res ? res.getBody() : "{}") || {}; } catch (_) { body = {}; }
    if (status === 507) {
      return t("err.quota", { used: size(body.used_bytes || 0), quota: size(body.quota_bytes || 0) });
    }
    if (status === 423 && isLockedBody(body)) {
      // A WebDAV lock: someone has the document open in an editor (files/locks.py).
      return t("err.locked", {
        path: body.lock_path || body.path || "",
        holder: body.lock_owner || body.lock_user || t("lock.someone"),
        until: String(body.lock_expires_at || "").slice(0, 16).replace("T", " "),
      });
    }
    if (status === 403) return t("err.forbidden");
    if (status === 404) return t("err.notfound");
    return t("err.other", { detail: body.detail || (err && err.message) || String(status) });
  }

  async function mkdirs(dir) {
    if (madeDirs.has(dir)) return;
    const res = await fetch("/api/v1/mkdir", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ path: dir, parents: true }),
    });
    if (!res.ok) {
      const text = await res.text();
      throw { message: dir, originalResponse: { getStatus: () => res.status, getBody: () => text } };
    }
    madeDirs.add(dir);
  }

  // ---- one file ------------------------------------------------------------------------
  async function start(job) {
    running += 1;
    job.started = true;
    try {
      await mkdirs(job.dir);
    } catch (err) {
      fail(job, err);
      return;
    }
    const upload = new window.tus.Upload(job.file, {
      endpoint: "/tus/",
      chunkSize: CHUNK,
      retryDelays: [0, 1000, 2000, 4000, 8000, 15000, 30000],
      headers: { "X-CSRF-Token": csrf },
      metadata: { filename: job.name, path: job.dir, filetype: job.file.type || "" },
      // The destination is part of the identity: the same file sent to two folders is two uploads.
      fingerprint: (file) =>
        Promise.resolve(["allset", job.dir, job.name, file.size, file.lastModified].join("\u0000")),
      removeFingerprintOnSuccess: true,
      onShouldRetry: (err) => {
        const status = err.originalResponse ? err.originalResponse.getStatus() : 0;
        // A 423 is retried when another request holds the upload (tus), not when a
        // document is locked by an editor: that lasts, and the user must be told.
        if (status === 423 && isLockedBody(bodyOf(err))) return false;
        const retry = status === 0 || status >= 500 || status === 409 || status === 423 || status === 429;
        if (retry && status !== 507) job.status.textContent = t("upload.retrying");
        return retry && status !== 507;
      },
      onProgress: (sent) => { job.sent = sent; show(job); },
      onSuccess: () => {
        job.sent = job.size;
        job.done = true;
        show(job);
        next(true);
      },
      onError: (err) => fail(job, err),
    });
    job.upload = upload;
    const previous = await upload.findPreviousUploads();
    if (previous.length) {
      job.status.textContent = t("upload.resuming");
      upload.resumeFromPreviousUpload(previous[0]);
    }
    upload.start();
  }

  function fail(job, err) {
    job.failed = true;
    job.item.classList.add("failed");
    job.status.textContent = t("upload.failed", { reason: reason(err) });
    show(job);
    next(true);
  }

  function next(finishedOne) {
    if (finishedOne) running -= 1;
    while (running < PARALLEL) {
      const job = jobs.find((j) => !j.started);
      if (!job) break;
      start(job);
    }
    refresh();
  }

  function add(files) {
    if (!files.length) return;
    all.hidden = false;
    for (const { file, rel } of files) {
      const parts = rel.split("/").filter((x) => x);
      const name = parts.pop() || file.name;
      const item = document.createElement("li");
      const label = document.createElement("span");
      label.className = "qname";
      label.textContent = parts.length ? `${parts.join("/")}/${name}` : name; // text, never HTML
      const bar = document.createElement("progress");
      bar.max = 100;
      bar.value = 0;
      bar.setAttribute("aria-label", label.textContent);
      const status = document.createElement("span");
      status.className = "qstatus muted";
      status.textContent = t("upload.waiting");
      item.append(label, bar, status);
      queue.append(item);
      jobs.push({ file, name, dir: joinPath(base, parts), size: file.size, sent: 0, item, bar, status });
    }
    next(false);
  }

  // ---- pickers, the form, drag and drop --------------------------------------------------
  for (const input of zone.querySelectorAll('input[type="file"]')) {
    input.addEventListener("change", () => {
      add([...input.files].map((file) => ({ file, rel: file.webkitRelativePath || file.name })));
      input.value = "";
    });
  }
  form.addEventListener("submit", (ev) => ev.preventDefault());

  // Folders dropped are walked with the File System entries API.
  async function walk(entry, prefix, out) {
    if (entry.isFile) {
      const file = await new Promise((ok, ko) => entry.file(ok, ko));
      out.push({ file, rel: prefix + file.name });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((ok, ko) => reader.readEntries(ok, ko));
        if (!batch.length) break;
        for (const child of batch) await walk(child, `${prefix}${entry.name}/`, out);
      }
    }
  }

  const target = zone.querySelector(".dropzone");
  target.addEventListener("dragover", (ev) => {
    ev.preventDefault();
    target.classList.add("over");
  });
  target.addEventListener("dragleave", () => target.classList.remove("over"));
  target.addEventListener("drop", async (ev) => {
    ev.preventDefault();
    target.classList.remove("over");
    const entries = [...ev.dataTransfer.items]
      .map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null))
      .filter((e) => e);
    if (!entries.length) {
      add([...ev.dataTransfer.files].map((file) => ({ file, rel: file.name })));
      return;
    }
    const out = [];
    for (const e of entries) await walk(e, "", out);
    add(out);
  });

  window.addEventListener("beforeunload", (ev) => {
    if (jobs.some((j) => j.started && !j.done && !j.failed)) {
      ev.preventDefault();
      ev.returnValue = t("upload.leave");
    }
  });
  setInterval(() => { if (jobs.some((j) => j.started && !j.done && !j.failed)) refresh(); }, 1000);
})();
