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
});
