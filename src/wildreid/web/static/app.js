// wildreid review: drag and drop onto the upload form, job progress polling, small niceties.
// No framework; every page works without this file except for the live progress.
"use strict";

function setUpUpload() {
  const drop = document.getElementById("drop");
  const input = document.getElementById("photos");
  const chosen = document.getElementById("chosen");
  if (!drop || !input) return;
  const show = () => {
    const names = Array.from(input.files).map((f) => f.name);
    chosen.textContent = names.length ? `${names.length} chosen: ${names.join(", ")}` : "";
  };
  input.addEventListener("change", show);
  ["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (event) => {
    event.preventDefault();
    drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((type) => drop.addEventListener(type, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    // Hand the dropped files to the form's own file input, so the normal form post sends them.
    const files = new DataTransfer();
    Array.from(event.dataTransfer.files).forEach((file) => files.items.add(file));
    input.files = files.files;
    show();
  });
}

function setUpJob() {
  const panel = document.getElementById("job");
  if (!panel) return;
  const bar = document.getElementById("job-progress");
  const stage = document.getElementById("job-stage");
  const error = document.getElementById("job-error");
  const next = document.getElementById("job-next");
  const list = document.getElementById("job-queries");
  const poll = async () => {
    let state;
    try {
      const response = await fetch(`/api/jobs/${panel.dataset.job}`, { headers: { Accept: "application/json" } });
      state = await response.json();
      if (!response.ok) throw new Error(state.error || response.statusText);
    } catch (problem) {
      stage.textContent = `Cannot reach the server (${problem.message}); retrying…`;
      setTimeout(poll, 2000);
      return;
    }
    bar.max = state.total || 1;
    bar.value = state.done;
    stage.textContent = state.stage || state.status;
    list.replaceChildren(...state.queries.map((q) => {
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.href = q.url;
      link.textContent = `#${q.id} ${q.name}`;
      const badge = document.createElement("span");
      badge.className = `badge ${q.status}`;
      badge.textContent = q.status;
      item.append(link, " ", badge);
      return item;
    }));
    if (state.error) {
      error.textContent = state.error;
      error.hidden = false;
    }
    if (state.status === "done" || state.status === "failed") {
      if (state.next_url) {
        next.href = state.next_url;
        next.hidden = false;
        if (state.status === "done") window.location.assign(state.next_url);
      }
      return;
    }
    setTimeout(poll, 700);
  };
  poll();
}

function setUpForms() {
  // One click, one decision: disable the buttons of a form once it is sent.
  document.querySelectorAll("form.decide, form.upload").forEach((form) => {
    form.addEventListener("submit", () => {
      form.querySelectorAll("button").forEach((button) => { button.disabled = true; });
    });
  });
  // A missing keypoint picture simply disappears.
  document.querySelectorAll("img[data-hide-on-error]").forEach((image) => {
    image.addEventListener("error", () => { image.hidden = true; });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setUpUpload();
  setUpJob();
  setUpForms();
});
