// The console's only script: lays out process graphs with dagre and follows a
// running execution through Server-Sent Events. Text from the services is only
// ever set as textContent, never parsed as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  return node;
}

function readJson(id) {
  const node = document.getElementById(id);
  return node ? JSON.parse(node.textContent) : null;
}

const SHAPES = { gateway: "diamond", timer: "round", human_approval: "person" };

function drawGraph(container, graph) {
  if (typeof dagre === "undefined" || !graph || !graph.nodes.length) return null;
  const g = new dagre.graphlib.Graph({ multigraph: false });
  g.setGraph({ rankdir: "LR", nodesep: 28, ranksep: 56, edgesep: 16, marginx: 12, marginy: 12 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const node of graph.nodes) {
    const width = Math.max(110, 8 * Math.max(node.label.length, Math.min(node.detail.length, 28)) + 24);
    g.setNode(node.id, { width, height: node.kind === "gateway" ? 64 : 48, node });
  }
  for (const edge of graph.edges) {
    g.setEdge(edge.source, edge.target, { edge, label: edge.label, width: edge.label ? Math.min(edge.label.length, 40) * 6 : 0, height: edge.label ? 14 : 0 });
  }
  dagre.layout(g);
  const size = g.graph();
  const root = svg("svg", { viewBox: `0 0 ${size.width} ${size.height}`, width: size.width, height: size.height, role: "img" });
  const defs = svg("defs");
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
  marker.appendChild(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }));
  defs.appendChild(marker);
  root.appendChild(defs);
  for (const e of g.edges()) {
    const data = g.edge(e);
    const points = data.points.map((p) => `${p.x},${p.y}`).join(" ");
    root.appendChild(svg("polyline", { points, class: `edge ${data.edge.kind}`, "marker-end": "url(#arrow)" }));
    if (data.label) {
      const label = svg("text", { x: data.x, y: data.y, class: "edge-label", "text-anchor": "middle" });
      label.textContent = data.label.length > 40 ? data.label.slice(0, 39) + "…" : data.label;
      root.appendChild(label);
    }
  }
  const nodes = {};
  for (const id of g.nodes()) {
    const { x, y, width, height, node } = g.node(id);
    const group = svg("g", { class: `node ${node.kind} pending`, "data-step": id, transform: `translate(${x - width / 2},${y - height / 2})` });
    if (SHAPES[node.kind] === "diamond") {
      group.appendChild(svg("polygon", { points: `${width / 2},0 ${width},${height / 2} ${width / 2},${height} 0,${height / 2}`, class: "shape" }));
    } else {
      group.appendChild(svg("rect", { width, height, rx: SHAPES[node.kind] === "round" ? 24 : 6, class: "shape" }));
    }
    const title = svg("text", { x: width / 2, y: height / 2 - 3, "text-anchor": "middle", class: "node-label" });
    title.textContent = node.label;
    const detail = svg("text", { x: width / 2, y: height / 2 + 13, "text-anchor": "middle", class: "node-detail" });
    detail.textContent = node.detail.length > 28 ? node.detail.slice(0, 27) + "…" : node.detail;
    const tip = svg("title");
    tip.textContent = `${node.id} (${node.kind})`;
    group.append(tip, title, detail);
    root.appendChild(group);
    nodes[id] = group;
  }
  container.replaceChildren(root);
  return nodes;
}

const STATUSES = ["pending", "ready", "running", "waiting", "completed", "failed", "skipped"];

function colourGraph(nodes, state) {
  if (!nodes) return;
  for (const step of state.steps) {
    const group = nodes[step.id];
    if (!group) continue;
    group.classList.remove(...STATUSES);
    group.classList.add(step.status);
    group.querySelector("title").textContent = `${step.id}: ${step.status}` + (step.iteration > 1 ? ` · iteration ${step.iteration}` : "");
  }
}

function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  return td;
}

function stepRow(step) {
  const row = document.createElement("tr");
  row.dataset.step = step.id;
  const status = document.createElement("span");
  status.className = `status ${step.status}`;
  status.textContent = step.status;
  const statusCell = document.createElement("td");
  statusCell.appendChild(status);
  const result = document.createElement("td");
  if (step.error) {
    const pre = document.createElement("pre");
    pre.className = "error";
    pre.textContent = `${step.error.code}: ${step.error.message}`;
    result.appendChild(pre);
  }
  if (step.decision) {
    const strong = document.createElement("strong");
    strong.textContent = step.decision;
    result.appendChild(strong);
  }
  if (step.skip_reason) result.append(step.skip_reason);
  if (step.output) {
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = "output";
    const pre = document.createElement("pre");
    pre.className = "output";
    pre.textContent = step.output;
    details.append(summary, pre);
    result.appendChild(details);
  }
  if (step.earlier.length) result.appendChild(earlierIterations(step));
  row.append(cell(step.name), cell(step.kind), statusCell, cell(String(step.iteration)), cell(String(step.attempt)), cell(step.duration), cell(step.cost), result);
  return row;
}

function earlierIterations(step) {
  const details = document.createElement("details");
  details.className = "earlier";
  const summary = document.createElement("summary");
  summary.textContent = `earlier iterations (${step.earlier.length + step.earlier_omitted})`;
  const list = document.createElement("ol");
  for (const earlier of step.earlier) {
    const item = document.createElement("li");
    item.textContent = earlier.line;
    if (earlier.output) {
      const pre = document.createElement("pre");
      pre.className = "output";
      pre.textContent = earlier.output;
      item.appendChild(pre);
    }
    list.appendChild(item);
  }
  details.append(summary, list);
  if (step.earlier_omitted) {
    const note = document.createElement("p");
    note.className = "meta";
    note.textContent = `${step.earlier_omitted} older ones are in the timeline only`;
    details.appendChild(note);
  }
  return details;
}

function setText(id, text) {
  const node = document.getElementById(id);
  if (node) node.textContent = text;
}

function showState(state, nodes) {
  const status = document.getElementById("status");
  status.className = `status ${state.status}`;
  status.textContent = state.status_label;
  setText("progress", state.progress);
  setText("cost", state.cost);
  setText("current", state.current.join(", ") || "-");
  const meter = document.getElementById("budget-meter");
  if (meter && state.budget_used !== null) meter.value = state.budget_used;
  const failure = document.getElementById("failure");
  failure.hidden = !state.error;
  failure.textContent = state.error ? `${state.error.code}: ${state.error.message}` : "";
  for (const form of document.querySelectorAll("#actions form")) {
    form.hidden = !state.actions.includes(form.dataset.action);
  }
  document.getElementById("waiting-approval").hidden = !state.steps.some(
    (s) => s.kind === "human_approval" && s.status === "waiting");
  document.querySelector("#steps tbody").replaceChildren(...state.steps.map(stepRow));
  showCompensation(state.compensation);
  colourGraph(nodes, state);
}

function showCompensation(compensation) {
  const section = document.getElementById("compensation");
  section.hidden = !compensation;
  if (!compensation) return;
  setText("compensation-summary", compensation.summary);
  const rows = compensation.undos.map((undo) => {
    const row = document.createElement("tr");
    row.dataset.undo = undo.key;
    const status = document.createElement("span");
    status.className = `status ${undo.status}`;
    status.textContent = undo.status;
    const statusCell = document.createElement("td");
    statusCell.appendChild(status);
    const result = document.createElement("td");
    if (undo.error) {
      const error = document.createElement("pre");
      error.className = "error";
      error.textContent = `${undo.error.code}: ${undo.error.message}`;
      result.appendChild(error);
    } else if (undo.output) {
      const output = document.createElement("pre");
      output.className = "output";
      output.textContent = undo.output;
      result.appendChild(output);
    }
    row.append(cell(undo.step_id), cell(String(undo.iteration)), statusCell, cell(String(undo.attempt)), result);
    return row;
  });
  section.querySelector("tbody").replaceChildren(...rows);
}

function addFact(timeline, fact) {
  const item = document.createElement("li");
  item.dataset.type = fact.type;
  item.dataset.sequence = fact.sequence;
  const time = document.createElement("time");
  time.textContent = fact.time;
  const type = document.createElement("span");
  type.className = "fact-type";
  type.textContent = fact.type;
  const line = document.createElement("span");
  line.className = "fact-line";
  line.textContent = fact.line;
  item.append(time, type, line);
  timeline.appendChild(item);
}

function follow(nodes) {
  const timeline = document.getElementById("timeline");
  const live = document.getElementById("live");
  const source = new EventSource(timeline.dataset.events);
  source.addEventListener("fact", (event) => addFact(timeline, JSON.parse(event.data)));
  source.addEventListener("state", (event) => showState(JSON.parse(event.data), nodes));
  source.addEventListener("end", (event) => {
    source.close();
    live.textContent = `finished: ${JSON.parse(event.data).status}`;
    live.dataset.ended = "true";
  });
  source.addEventListener("failure", (event) => {
    source.close();
    const error = JSON.parse(event.data);
    const box = document.getElementById("stream-error");
    box.hidden = false;
    box.textContent = `The execution service answered ${error.status}${error.reason ? " (" + error.reason + ")" : ""}: ${error.message}`;
    live.textContent = "not following";
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CONNECTING) live.textContent = "reconnecting…";
    // Closed by the browser: the console refused the stream (signed out, or it is down).
    if (source.readyState === EventSource.CLOSED) live.textContent = "not following: reload the page (or sign in again)";
  });
  source.addEventListener("open", () => { live.textContent = "following…"; });
}

document.addEventListener("DOMContentLoaded", () => {
  const container = document.getElementById("graph");
  const nodes = container ? drawGraph(container, readJson("graph-data")) : null;
  const state = readJson("execution-data");
  if (state) {
    colourGraph(nodes, state);
    follow(nodes);
  }
});
