// Steering by example, the browser's side (recommender/serve/steering.py). Runs as the steering bar's gr.HTML
// js_on_load: `element`, `props`, `trigger` and `watch` are Gradio's. The server sends, as the bar's value, the
// results' ids and names in gallery order, the marks and the mode; this script
//  - gives each result of the gallery (#results) two toggles, "More like this" and "Not like this" (buttons with
//    aria-pressed, so a keyboard and a screen reader use them as they use any toggle), and names the result itself
//    "<product name>, result 3 of 8" (Gradio names it "Thumbnail 3 of 8");
//  - lists the marks in the bar, each with a button that removes it, and "Start over";
//  - sends the whole set of marks wanted with each change ("input" event, numbered): the server answers with the
//    results steered by them. A newer change sent before an answer arrives is kept: older answers are not shown.
const LIKE = "like", UNLIKE = "unlike";
let sent = 0;  // the number of the last set of marks sent
let marks = {like: new Map(), unlike: new Map()};  // id -> name, as the visitor last set them

const view = () => props.value || {};
const gallery = () => document.querySelector("#results");

function marksOf(value) {
  return {like: new Map((value.like || []).map((m) => [m.id, m.name])),
          unlike: new Map((value.unlike || []).map((m) => [m.id, m.name]))};
}

function markOf(id) {
  return marks.like.has(id) ? LIKE : marks.unlike.has(id) ? UNLIKE : null;
}

function send() {  // the marks wanted; the server answers with the steered results
  sent += 1;
  trigger("input", {like: [...marks.like.keys()], unlike: [...marks.unlike.keys()], seq: sent});
  render();
}

function toggle(id, name, mark) {
  const had = markOf(id);
  marks.like.delete(id);
  marks.unlike.delete(id);
  if (had !== mark) marks[mark].set(id, name);
  send();
}

function button(className, text, label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = text;
  b.setAttribute("aria-label", label);
  b.addEventListener("click", (event) => { event.stopPropagation(); onClick(); });
  return b;
}

function caption(item) {  // a result's or an example's caption: the product's name, then its facts on a line
  return item.querySelector(".caption-label")?.textContent || "";
}

const nameShown = (item) => caption(item).split("\n")[0].trim();  // the product's name
const captionOf = (item) => caption(item).replace(/\s+/g, " ").trim();  // the caption, on one line

function nameItems(root, what) {  // "<caption>, result 3 of 8": the caption (product name first), then the rank
  const items = [...root.querySelectorAll("button.thumbnail-item")];
  items.forEach((item, i) => {
    const label = `${captionOf(item) || "Product"}, ${what} ${i + 1} of ${items.length}`;
    if (item.getAttribute("aria-label") !== label) item.setAttribute("aria-label", label);
  });
}

function nameQueryProduct() {  // the catalog product searched for, shown on the left: Gradio names its picture ""
  const shown = document.querySelector("#query-product button");
  const name = view().query_name;
  if (shown && name && shown.getAttribute("aria-label") !== `Searching for products like ${name}`) {
    shown.setAttribute("aria-label", `Searching for products like ${name}`);
  }
}

function decorate() {  // each result's toggles and accessible name, when the gallery shows what the value says
  const root = gallery();
  if (!root) return;
  const value = view(), ids = value.ids || [], names = value.names || [];
  const items = [...root.querySelectorAll(".gallery-item")];
  const steerable = value.mode === "photo" || value.mode === "product" || value.mode === "marks";
  nameItems(root, "result");
  const examples = document.querySelector("#examples");
  if (examples) nameItems(examples, "example");
  nameQueryProduct();
  items.forEach((item, i) => {
    const matches = items.length === ids.length && nameShown(item) === names[i];
    let toggles = item.querySelector(".steer-toggles");
    if (!(matches && steerable)) {
      if (toggles) toggles.remove();
      return;
    }
    const id = ids[i], name = names[i];
    if (!toggles || toggles.dataset.id !== id) {
      if (toggles) toggles.remove();
      toggles = document.createElement("div");
      toggles.className = "steer-toggles";
      toggles.dataset.id = id;
      toggles.setAttribute("role", "group");
      toggles.setAttribute("aria-label", `Steer by ${name}`);
      toggles.append(button("steer-like", "+ More like", `More like this: ${name}`, () => toggle(id, name, LIKE)),
                     button("steer-unlike", "− Not like", `Not like this: ${name}`, () => toggle(id, name, UNLIKE)));
      item.append(toggles);
    }
    const mark = markOf(id);
    for (const [kind, b] of [[LIKE, toggles.children[0]], [UNLIKE, toggles.children[1]]]) {
      const pressed = String(mark === kind);
      if (b.getAttribute("aria-pressed") !== pressed) b.setAttribute("aria-pressed", pressed);
    }
    item.dataset.mark = mark || "";
  });
}

function renderBar() {  // the marks, each removable, "Start over", or why there is nothing to mark
  const bar = element.querySelector(".steer");
  if (!bar) return;
  const value = view(), marked = marks.like.size + marks.unlike.size;
  bar.replaceChildren();
  bar.dataset.mode = value.mode || "none";
  const line = document.createElement("p");
  line.className = "steer-says";
  if (value.mode === "live") {
    line.textContent = "Marking results works on a photo's or a product's results; the live camera's follow its "
      + "picture. Click a result to search from it, then mark.";
  } else if (!marked) {
    line.textContent = (value.ids || []).length
      ? "Steer the results: mark one \"More like this\" or \"Not like this\"." : "";
  } else {
    line.textContent = "Steered by your marks:";
  }
  bar.append(line);
  if (marked && value.mode !== "live") {
    const list = document.createElement("ul");
    list.className = "steer-marks";
    for (const [kind, said] of [[LIKE, "More like"], [UNLIKE, "Not like"]]) {
      for (const [id, name] of marks[kind]) {
        const entry = document.createElement("li");
        entry.dataset.mark = kind;
        entry.append(`${said}: ${name} `, button("steer-remove", "×", `Remove the mark on ${name}`, () => {
          marks[kind].delete(id);
          send();
        }));
        list.append(entry);
      }
    }
    bar.append(list, button("steer-start-over", "Start over", "Start over: remove every mark", () => {
      marks = {like: new Map(), unlike: new Map()};
      send();
    }));
  }
}

function render() {
  renderBar();
  decorate();
}

function answered() {  // a new value from the server: its marks, unless a newer change is on its way
  const value = view();
  if (value.seq === null || value.seq === undefined || value.seq >= sent) {
    marks = marksOf(value);
    if (value.seq === null || value.seq === undefined) sent = 0;  // a new query: its own marks, numbered afresh
  }
  render();
}

let pending = false;  // the gallery redraws its items; decorate once per frame after it does
const observer = new MutationObserver(() => {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => { pending = false; decorate(); });
});
// the galleries and the query's picture are Gradio's: redrawn whenever it likes, each redraw decorated again
observer.observe(document.body, {childList: true, subtree: true, attributes: true, attributeFilter: ["aria-label"]});
watch("value", answered);
answered();
