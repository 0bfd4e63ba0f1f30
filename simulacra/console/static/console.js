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

// page: analytics

// page: cloud
