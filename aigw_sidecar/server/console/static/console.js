// aigw-sidecar console: small enhancements; every page works without this file.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // A page that shows a secret was a POST's reply: make a reload a plain GET, so
  // it neither resends the form nor shows the secret again.
  if (document.getElementById("secret") && window.history.replaceState) {
    window.history.replaceState(null, "", window.location.href);
  }

  // Copy buttons: data-copy names the element whose value is copied.
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const source = document.getElementById(button.dataset.copy);
    const status = document.querySelector(".copied");
    if (!source) continue;
    button.hidden = false;
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(source.value || source.textContent);
      } catch (err) {
        source.select();
        document.execCommand("copy");
      }
      if (status) status.textContent = "Copied to the clipboard.";
    });
  }

  // Limit toggles: the value input is usable only while its checkbox is on.
  const period = document.querySelector("select[data-period]");
  const syncPeriod = () => {
    if (!period) return;
    const anyPeriodic = [...document.querySelectorAll("input[data-toggles]")].some((box) =>
      box.checked && box.dataset.resets === "1");
    period.disabled = !anyPeriodic;
  };
  for (const box of document.querySelectorAll("input[data-toggles]")) {
    const input = document.getElementById(box.dataset.toggles);
    if (!input) continue;
    const sync = () => { input.disabled = !box.checked; syncPeriod(); };
    box.addEventListener("change", () => { sync(); if (box.checked) input.focus(); });
    sync();
  }

  // Delete: the button works once the typed name matches (the server checks too).
  const expect = document.querySelector("input[data-expect]");
  const confirm = document.querySelector("button[data-confirm-button]");
  if (expect && confirm) {
    const sync = () => { confirm.disabled = expect.value !== expect.dataset.expect; };
    expect.addEventListener("input", sync);
    sync();
  }

  // Enable/disable switches post in place; an error falls back to the full page.
  for (const form of document.querySelectorAll("form.toggle-form")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = form.querySelector("button.switch");
      button.disabled = true;
      try {
        const reply = await fetch(form.action, {
          method: "POST", body: new URLSearchParams(new FormData(form)),
          credentials: "same-origin", redirect: "follow",
        });
        if (!reply.ok) throw new Error(String(reply.status));
        const on = button.getAttribute("aria-checked") !== "true";
        button.setAttribute("aria-checked", on ? "true" : "false");
        button.querySelector(".switch-text").textContent = on ? "On" : "Off";
        form.action = form.action.replace(/\/(enable|disable)$/, on ? "/disable" : "/enable");
        const row = form.closest("tr");
        const badge = row && row.querySelector(".badge.disabled");
        if (badge && on) badge.remove();
        if (row && !on && !badge) {
          const tag = document.createElement("span");
          tag.className = "badge disabled";
          tag.textContent = "disabled";
          row.querySelector("td.name").append(tag);
        }
      } catch (err) {
        form.submit();
        return;
      } finally {
        button.disabled = false;
      }
    });
  }
});
