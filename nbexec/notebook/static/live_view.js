// nbexec's live run view in the browser (an anywidget front-end module).
//
// The kernel sends two things: `head`, HTML for everything above the log (status,
// phase, progress, metrics, resource use), and `lines`, the last lines of the log,
// each numbered. Only lines with a number not shown yet are appended, so the log
// pane is never redrawn as a whole and keeps its scroll position. Like a terminal,
// it follows the newest line while it is scrolled to the bottom; a reader who
// scrolls up keeps their place until they scroll back down (or click "newest").

const FOLLOW_SLACK_PX = 4; // "at the bottom", give or take rounding of fractional pixels
const MAX_KEPT_LINES = 1000; // the pane's scrollback; the log files hold every line

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "nbexec-live";
  const head = document.createElement("div");
  head.className = "nbexec-live-head";
  const tailBox = document.createElement("details");
  tailBox.className = "nbexec-live-tailbox";
  tailBox.open = true;
  const label = document.createElement("summary");
  const pane = document.createElement("pre");
  pane.className = "nbexec-tail";
  pane.tabIndex = 0; // scrollable with the keyboard too
  const whole = document.createElement("div"); // finished lines, oldest first
  const unfinished = document.createElement("div"); // the streams' unfinished lines (a \r progress bar)
  pane.append(whole, unfinished);
  const newest = document.createElement("button");
  newest.className = "nbexec-tail-newest";
  newest.type = "button";
  newest.textContent = "\u2193 newest";
  newest.title = "scroll to the newest line and follow it";
  newest.hidden = true;
  const note = document.createElement("div");
  note.className = "nbexec-tail-note";
  tailBox.append(label, pane, newest, note);
  root.append(head, tailBox);
  el.append(root);

  let generation = null; // which selection of ranks the pane shows
  let lastSeq = -1; // the number of the newest line appended
  let follow = true; // scrolled to the bottom: keep the newest line in view

  const atBottom = () => pane.scrollHeight - pane.scrollTop - pane.clientHeight <= FOLLOW_SLACK_PX;
  const toBottom = () => {
    pane.scrollTop = pane.scrollHeight;
  };
  pane.addEventListener("scroll", () => {
    follow = atBottom();
    newest.hidden = follow;
  });
  newest.addEventListener("click", () => {
    follow = true;
    newest.hidden = true;
    toBottom();
  });

  const lineElement = ([, text, stderr]) => {
    const div = document.createElement("div");
    div.textContent = text; // text, never HTML: a log line cannot inject markup
    if (stderr) div.className = "nbexec-stderr";
    return div;
  };

  function drawLines() {
    const keepBottom = follow;
    const gen = model.get("generation");
    if (gen !== generation) {
      // another rank was chosen: its lines replace the pane's
      whole.replaceChildren();
      lastSeq = -1;
      generation = gen;
    }
    const partial = [];
    for (const line of model.get("lines")) {
      const seq = line[0];
      if (seq < 0) partial.push(lineElement(line));
      else if (seq > lastSeq) {
        whole.append(lineElement(line));
        lastSeq = seq;
      }
    }
    unfinished.replaceChildren(...partial);
    const extra = whole.childElementCount - MAX_KEPT_LINES;
    if (extra > 0) {
      const before = pane.scrollHeight;
      for (let i = 0; i < extra; i++) whole.firstElementChild.remove();
      if (!keepBottom) pane.scrollTop -= before - pane.scrollHeight; // the reader keeps their place
    }
    if (keepBottom) toBottom();
    root.dataset.lastSeq = String(lastSeq);
  }

  function drawHead() {
    head.innerHTML = model.get("head"); // the kernel escapes every value in it (nbexec.render.markup)
    root.style.borderLeftColor = model.get("accent") || "";
  }

  let wasOver = model.get("over");
  function drawFrame() {
    const over = model.get("over");
    if (wasOver && !over) tailBox.open = true; // another run in the same widget (the panel's): its lines show again
    wasOver = over;
    root.classList.toggle("nbexec-over", over);
    tailBox.hidden = model.get("quiet") || (over && whole.childElementCount + unfinished.childElementCount === 0);
    label.textContent = model.get("tail_label");
    if (over) tailBox.open = false; // the summary comes first; the last lines stay one click away
    note.textContent = model.get("note");
  }

  drawHead();
  drawLines();
  drawFrame();
  const handlers = [
    ["head", drawHead], ["accent", drawHead],
    ["lines", drawLines], ["generation", drawLines],
    ["over", drawFrame], ["quiet", drawFrame], ["tail_label", drawFrame], ["note", drawFrame],
  ];
  for (const [name, handler] of handlers) model.on(`change:${name}`, handler);
  return () => {
    for (const [name, handler] of handlers) model.off(`change:${name}`, handler);
  };
}

export default { render };
