// instructrl feedback: ranking board (drag and drop, number keys), shortcuts, job progress.
// Served by the app itself (no CDN); the rank <select>s stay the source of truth, so the page
// also works without this script.
"use strict";

function setupRanking(form) {
  const k = Number(form.dataset.k);
  const lanes = Array.from(form.querySelectorAll(".lane"));
  const cards = Array.from(form.querySelectorAll(".rank-card"));
  const select = (i) => form.querySelector(`#rank_${i}`);
  const laneFor = (rank) => lanes.find((l) => l.dataset.rank === String(rank)) || lanes[0];

  function layout() {
    for (const card of cards) laneFor(select(card.dataset.index).value).appendChild(card);
  }
  function place(index, rank) {
    const s = select(index);
    s.value = rank >= 1 && rank <= k ? String(rank) : "";
    s.dispatchEvent(new Event("change", { bubbles: true }));
  }
  for (const card of cards) {
    card.addEventListener("dragstart", (e) => {
      e.dataTransfer.setData("text/plain", card.dataset.index);
      e.dataTransfer.effectAllowed = "move";
    });
    card.addEventListener("keydown", (e) => {
      if (/^[0-9]$/.test(e.key)) {
        const rank = Number(e.key);
        if (rank >= 1 && rank <= k) place(card.dataset.index, rank);  // keys above K do nothing
        card.focus();
        e.preventDefault();
      } else if (e.key === "Backspace" || e.key === "Delete") {
        place(card.dataset.index, 0);
        card.focus();
        e.preventDefault();
      }
    });
  }
  for (const lane of lanes) {
    lane.addEventListener("dragover", (e) => { e.preventDefault(); lane.classList.add("over"); });
    lane.addEventListener("dragleave", () => lane.classList.remove("over"));
    lane.addEventListener("drop", (e) => {
      e.preventDefault();
      lane.classList.remove("over");
      const index = e.dataTransfer.getData("text/plain");
      if (index !== "") place(index, Number(lane.dataset.rank || 0));
    });
  }
  form.addEventListener("change", (e) => { if (e.target.matches("select[name^=rank_]")) layout(); });
  layout();
}

function setupForm(form) {
  let sent = false;
  form.addEventListener("submit", (e) => {
    if (sent) { e.preventDefault(); return; }  // one post per page; the client id makes retries safe
    sent = true;
    const button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
  });
  document.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "Enter") { form.requestSubmit(); e.preventDefault(); }
  });
  // Likert by keys: with the focus inside an output (not in a text field), 1-7 picks its score
  for (const output of form.querySelectorAll("fieldset.output")) {
    output.addEventListener("keydown", (e) => {
      if (e.ctrlKey || e.metaKey || e.altKey || e.target.matches("textarea, input[type=text], select")) return;
      const choice = /^[1-7]$/.test(e.key) && output.querySelector(`input[type=radio][value="${e.key}"]`);
      if (choice) { choice.checked = true; choice.focus(); e.preventDefault(); }
    });
  }
  if (form.dataset.kind === "rank") setupRanking(form);
  focusFirstError(form);
}

// After a refused submit, the focus goes to the first field with an error (its message is beside it)
function focusFirstError(form) {
  const error = form.querySelector(".field-error[id^=error-]");
  if (!error) return;
  const name = error.id.slice("error-".length);
  const field = form.querySelector(`[name="${name}"]:checked`) || form.querySelector(`[name="${name}"]`)
    || error.closest("fieldset, section")?.querySelector("input, select, textarea, [tabindex]");
  (field || error).focus();
  (field || error).scrollIntoView({ block: "center" });
}

function watchJobs() {
  const rows = Array.from(document.querySelectorAll("tr.job"))
    .filter((r) => r.dataset.status === "queued" || r.dataset.status === "running");
  if (!rows.length) return;
  const tick = async () => {
    let active = 0;
    for (const row of rows) {
      const reply = await fetch(`/admin/jobs/${row.dataset.jobId}`, { headers: { Accept: "application/json" } });
      if (!reply.ok) continue;
      const job = await reply.json();
      row.querySelector(".job-status").textContent = job.status;
      row.querySelector(".job-done").textContent = job.done;
      row.querySelector("progress").value = job.done;
      row.querySelector(".job-message").textContent = job.message;
      if (job.status === "queued" || job.status === "running") active += 1;
    }
    if (active) setTimeout(tick, 1000); else window.location.reload();
  };
  setTimeout(tick, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("task-form");
  if (form) setupForm(form);
  watchJobs();
});
