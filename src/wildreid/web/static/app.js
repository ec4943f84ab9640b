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

function setUpReview() {
  // The review page: keypoint lines toggled in place of a candidate's photos (drawn only when
  // asked: drawing is CPU-heavy), a selected candidate, and keyboard shortcuts (listed on the page).
  const review = document.getElementById("review");
  if (!review) return;
  const rows = Array.from(review.querySelectorAll("article.candidate"));
  const toggle = (row) => {
    const link = row.querySelector("a[data-overlay]");
    const overlay = row.querySelector("img.overlay");
    if (!link || !overlay) return;
    const on = link.getAttribute("aria-pressed") !== "true";
    if (on && !overlay.src && !overlay.dataset.loading) {
      // Fetched rather than set as src: the response says how strong the evidence is (header
      // X-Evidence, e.g. "3 matches on the animal — weak evidence"), shown beside the toggle.
      overlay.dataset.loading = "1";
      fetch(overlay.dataset.src).then((response) => {
        if (!response.ok) throw new Error(String(response.status));
        const said = response.headers.get("X-Evidence");
        const evidence = row.querySelector("[data-evidence]");
        if (said && evidence) evidence.textContent = decodeURIComponent(said);
        if (said) overlay.alt = overlay.alt.split(":")[0] + ": " + decodeURIComponent(said);
        return response.blob();
      }).then((blob) => { overlay.src = URL.createObjectURL(blob); })
        .catch(() => { overlay.hidden = true; });
    }
    overlay.hidden = !on;
    row.querySelector(".strip").classList.toggle("lines", on);
    link.setAttribute("aria-pressed", String(on));
  };
  rows.forEach((row) => {
    const link = row.querySelector("a[data-overlay]");
    if (link) link.addEventListener("click", (event) => { event.preventDefault(); toggle(row); });
    row.addEventListener("click", () => select(row));
  });
  let selected = rows[0];
  function select(row) {
    rows.forEach((other) => other.classList.toggle("selected", other === row));
    selected = row;
  }
  const press = (row, selector) => {
    const button = row && row.querySelector(selector);
    if (button && !button.disabled) button.closest("form").requestSubmit(button);
  };
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest("input, textarea, select, button, a[href]:focus")) return;
    const key = event.key.toLowerCase();
    if (/^[1-9]$/.test(key) && rows[Number(key) - 1]) {
      select(rows[Number(key) - 1]);
      selected.scrollIntoView({ block: "nearest" });
    } else if (key === "c") {
      press(selected, "button[data-confirm]");
    } else if (key === "x") {
      press(selected, "button[data-not]");
    } else if (key === "k") {
      rows.forEach(toggle);
    } else if (key === "n") {
      const name = document.getElementById("new-name");
      if (name) { name.focus(); event.preventDefault(); }
    } else if (key === "s") {
      press(document.getElementById("skip-form"), "button");
    } else if (key === "j") {
      const next = document.getElementById("next-link");
      if (next) window.location.assign(next.href);
    } else {
      return;
    }
    event.preventDefault();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setUpUpload();
  setUpJob();
  setUpForms();
  setUpReview();
});
