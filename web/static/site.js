// moviEharmony's progressive enhancement: the forms work without it. It adds movie suggestions as
// you type (from GET /v1/movies), user id suggestions (from GET /v1/users) and character counts.
"use strict";

function suggest(input) {
  const list = document.querySelector(input.dataset.suggest);
  let timer = null;
  let asked = 0;
  const show = (movies) => {
    const checked = list.querySelector("input:checked");
    const kept = checked ? [checked.closest(".choice")] : [];
    list.replaceChildren(...kept);
    movies.filter((m) => !checked || m.movie_id !== checked.value).forEach((m, n) => {
      const choice = document.createElement("span");
      choice.className = "choice";
      const radio = document.createElement("input");
      radio.type = "radio";
      radio.name = "movie_id";
      radio.value = m.movie_id;
      radio.id = `suggestion-${n}`;
      const label = document.createElement("label");
      label.htmlFor = radio.id;
      label.textContent = m.year ? `${m.title} (${m.year})` : m.title;
      choice.append(radio, label, " ", about(m));
      list.append(choice);
    });
    if (!movies.length) {
      const none = document.createElement("p");
      none.className = "help";
      none.textContent = `No movie matches “${input.value}”.`;
      list.append(none);
    }
  };
  input.addEventListener("input", () => {
    clearTimeout(timer);
    const query = input.value.trim();
    if (query.length < 2) return;
    timer = setTimeout(async () => {
      const mine = ++asked;
      const response = await fetch(`/v1/movies?${new URLSearchParams({ q: query, limit: "8" })}`);
      if (mine !== asked || !response.ok) return; // a newer request is on its way, or nothing useful
      show((await response.json()).movies);
    }, 150);
  });
  // Enter in the finder looks up movies right away instead of sending the review.
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      input.dispatchEvent(new Event("input"));
    }
  });
}

// A link to the movie's page, as the server renders it beside each found movie.
function about(movie) {
  const link = document.createElement("a");
  link.className = "about";
  link.href = `/movies/${encodeURIComponent(movie.movie_id)}`;
  const name = document.createElement("span");
  name.className = "visually-hidden";
  name.textContent = ` ${movie.title}`;
  link.append("about", name);
  return link;
}

// User ids that start with what is typed, offered by the input's <datalist>.
function suggestUsers(input) {
  const list = document.getElementById(input.getAttribute("list"));
  let timer = null;
  let asked = 0;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    const prefix = input.value.trim();
    if (!prefix || prefix.length > 64) return;
    timer = setTimeout(async () => {
      const mine = ++asked;
      const response = await fetch(`/v1/users?${new URLSearchParams({ prefix, limit: "10" })}`);
      if (mine !== asked || !response.ok) return; // a newer request is on its way, or nothing useful
      const users = (await response.json()).users;
      list.replaceChildren(...users.map((user) => Object.assign(document.createElement("option"), { value: user })));
    }, 150);
  });
}

function count(field) {
  const out = document.querySelector(field.dataset.count);
  const update = () => { out.textContent = `${field.value.length} of ${field.maxLength} characters`; };
  field.addEventListener("input", update);
  update();
}

document.querySelectorAll("[data-suggest]").forEach(suggest);
document.querySelectorAll("input[list][data-users]").forEach(suggestUsers);
document.querySelectorAll("[data-count]").forEach(count);
