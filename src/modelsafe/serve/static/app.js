// Small progressive enhancements; every page works without JavaScript.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Filters apply as soon as a select changes.
  for (const select of document.querySelectorAll("form.filters select")) {
    select.addEventListener("change", () => select.form.submit());
  }
  // Copy a recipe's JSON (read from a data attribute, never inserted as HTML).
  for (const button of document.querySelectorAll("button.copy")) {
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(button.dataset.recipe || "");
        button.textContent = "Copied";
      } catch (_err) {
        button.textContent = "Copy failed";
      }
    });
  }
  // Cancel a queued or running job (shown only with JavaScript: it needs a POST with the token).
  const jobs = document.querySelector("table.jobs");
  for (const button of document.querySelectorAll("button.cancel-job")) {
    button.hidden = false;
    button.addEventListener("click", () => cancelJob(button, jobs));
  }
});

// The API token, asked for once per tab when the server has one; kept in sessionStorage (gone
// when the tab closes) and sent only as a bearer header to this server.
const TOKEN_KEY = "modelsafe-api-token";

async function cancelJob(button, table) {
  const row = button.closest("tr");
  const message = row.querySelector(".cancel-error");
  const say = (text) => {
    message.textContent = text;
    message.hidden = !text;
  };
  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  if (!token && table && table.dataset.tokenRequired === "1") {
    token = (window.prompt("This server needs its API token to cancel a job:") || "").trim();
    if (!token) {
      return;
    }
  }
  button.disabled = true;
  say("");
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  let response;
  let body = {};
  try {
    response = await fetch(`/api/jobs/${encodeURIComponent(button.dataset.job)}/cancel`, {
      method: "POST",
      headers,
      credentials: "omit",
    });
    body = await response.json().catch(() => ({}));
  } catch (_err) {
    say("The server did not answer; is `modelsafe serve` still running?");
    button.disabled = false;
    return;
  }
  if (!response.ok) {
    if (response.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
    }
    say([body.error || `HTTP ${response.status}`, body.hint].filter(Boolean).join(": "));
    button.disabled = response.status === 409; // (done or failed meanwhile: nothing to cancel)
    return;
  }
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
  }
  const badge = row.querySelector(".badge");
  badge.textContent = body.status;
  badge.className = `badge job-${body.status}`;
  row.dataset.status = body.status;
  button.remove();
}
