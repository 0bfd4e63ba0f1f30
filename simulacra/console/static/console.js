// The console's one script: no library, no build step. Pages work without it (links and
// forms); it adds what needs a script: the tracker's live tail and confirmations. Each
// page's part starts when its element is on the page.
"use strict";

// A form with data-confirm asks before it is sent (deleting, ending sessions).
document.addEventListener("submit", (event) => {
  const message = event.target.dataset && event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});

// page: tracker
// The live tail: one EventSource; each event is a batch of rows the server rendered (newest
// first), inserted at once; the page keeps the newest data-rows rows.
(() => {
  const table = document.getElementById("tail");
  if (!table || !window.EventSource) return;
  const body = document.getElementById("tail-rows");
  const skipped = document.getElementById("tail-skipped");
  const state = document.getElementById("tail-state");
  const pause = document.getElementById("tail-pause");
  const keep = Number(table.dataset.rows) || 200;
  let after = table.dataset.after || "0";
  let skippedCount = 0;
  let source = null;
  const url = () => table.dataset.events + (table.dataset.events.endsWith("?") ? "" : "&") + "after=" + encodeURIComponent(after);
  const onBatch = (event) => {
    const batch = JSON.parse(event.data);
    after = String(batch.last);
    for (const row of body.querySelectorAll("tr.fresh")) row.classList.remove("fresh");
    body.insertAdjacentHTML("afterbegin", batch.html);
    while (body.rows.length > keep) body.deleteRow(-1);
    skippedCount += batch.skipped;
    skipped.textContent = String(skippedCount);
    state.textContent = "Live: newest record " + after + ".";
  };
  const start = () => {
    source = new EventSource(url());
    source.onmessage = onBatch;
    source.onopen = () => { state.textContent = "Live."; };
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) state.textContent = "The stream stopped: reload to resume.";
    };
    pause.textContent = "Pause";
    pause.setAttribute("aria-pressed", "false");
  };
  const stop = () => {
    source.close();
    source = null;
    state.textContent = "Paused at record " + after + ".";
    pause.textContent = "Resume";
    pause.setAttribute("aria-pressed", "true");
  };
  pause.hidden = false;
  pause.addEventListener("click", () => (source ? stop() : start()));
  start();
})();

// page: analytics
// The charts are redrawn by the server: fetch its fragment every few seconds while visible.
(() => {
  const box = document.getElementById("analytics");
  if (!box) return;
  const refresh = async () => {
    if (document.hidden) return;
    try {
      const answer = await fetch(box.dataset.refresh, { headers: { accept: "text/html" } });
      if (answer.ok) box.innerHTML = await answer.text();
    } catch (error) {
      // the server is away: the last charts stay; the next tick tries again
    }
  };
  window.setInterval(refresh, 5000);
})();

// page: cloud
