/* The search page: one box, this server's DNSDB API v2, the analyst's key.

   Everything that comes from the database reaches the page as text
   (textContent, text nodes, SVG attributes), never as markup: a name or a
   TXT string may hold any byte, `<script>` included. The server's
   Content-Security-Policy forbids inline script besides.

   The lookup lives in the address's fragment (#rrset/name/www.example.com):
   a pivot is a plain link, so back, forward, bookmarks and new tabs work,
   and the key, kept in this tab's sessionStorage, is never in a URL.
   Answers are read line by line as they stream (SAF: a "begin" line, one
   "obj" line a result, a closing "succeeded", "limited" or "failed"). */
"use strict";

(function () {
  const KEY_NAME = "sie-dns-collector.api-key";
  const SVG = "http://www.w3.org/2000/svg";
  const ADDRESS_TYPES = new Set(["A", "AAAA"]);
  // which space-separated fields of a record's text are names (a space inside a name is written \032)
  const NAME_FIELDS = {
    NS: [0], CNAME: [0], DNAME: [0], PTR: [0], MX: [1], KX: [1], AFSDB: [1], RT: [1], SRV: [3], SOA: [0, 1],
    SVCB: [1], HTTPS: [1],
  };
  const NUMERIC = new Set(["time_first", "time_last", "count"]);
  const TIMELINE_MAX = 500; // bars drawn; a longer answer is still all in the table
  const RENDER_EVERY_MS = 200; // while an answer streams in

  const $ = (id) => document.getElementById(id);
  const state = {
    rows: [], // the answer's objects, each with its place in the answer
    first: Infinity, last: -Infinity, // the answer's time span: the timeline's axis
    types: null, // the types present, as the type filter offers them
    sort: null, descending: false,
    controller: null, pending: null, lastDrawn: 0,
  };

  // ------------------------------------------------------------ lookups
  function isAddress(text) {
    const v4 = "\\d{1,3}(?:\\.\\d{1,3}){3}";
    const v6 = "[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*";
    const one = `(?:${v4}|${v6})`;
    return new RegExp(`^${one}(?:[/,]\\d{1,3}|-${one})?$`).test(text);
  }

  /* The API path segments for what was typed: an address, prefix or range
     is an rdata/ip lookup; a name (wildcards as DNSDB's) an rrset lookup,
     or an rdata/name one when asked. */
  function lookupOf(text, kind) {
    const value = text.trim();
    if (isAddress(value) && kind !== "rrset") {
      return ["rdata", "ip", value.replace("/", ",")];
    }
    return [kind === "rdata" ? "rdata" : "rrset", "name", value];
  }

  function fragmentOf(segments) {
    return "#" + segments.map(encodeURIComponent).join("/");
  }

  function segmentsOf(fragment) {
    let segments = [];
    try {
      segments = fragment.replace(/^#/, "").split("/").map((part) => decodeURIComponent(part));
    } catch {
      // a broken %-escape: said below as any other fragment that is no lookup
    }
    if (segments.length < 3 || !["rrset", "rdata"].includes(segments[0]) || !segments[2]) {
      throw new URIError("the address's #fragment is no lookup (#rrset/name/NAME, #rdata/ip/ADDRESS, ...)");
    }
    return segments;
  }

  function lookupLink(segments, text, className, title) {
    const link = document.createElement("a");
    link.href = fragmentOf(segments);
    link.className = className;
    link.textContent = visible(text);
    if (title) link.title = visible(title);
    return link;
  }

  // ---------------------------------------------------------------- key
  function key() {
    return sessionStorage.getItem(KEY_NAME);
  }

  function askKey(note) {
    $("key-form").hidden = false;
    $("forget-key").hidden = true;
    if (note) $("key-note").textContent = note;
    $("api-key").value = "";
    $("api-key").focus();
  }

  function keyGiven(event) {
    event.preventDefault();
    const given = $("api-key").value.trim();
    if (!given) return;
    sessionStorage.setItem(KEY_NAME, given);
    $("api-key").value = "";
    $("key-form").hidden = true;
    $("forget-key").hidden = false;
    const pending = state.pending;
    state.pending = null;
    if (pending) run(pending);
    else $("query").focus();
  }

  function forgetKey() {
    sessionStorage.removeItem(KEY_NAME);
    askKey("The key is forgotten. Give a key to search.");
  }

  // -------------------------------------------------------- the answer
  function say(text, kind) {
    const status = $("status");
    status.textContent = visible(text);
    status.dataset.state = kind;
  }

  function forgetAnswer() {
    if (state.controller) state.controller.abort();
    state.controller = null;
    state.rows = [];
    state.first = Infinity;
    state.last = -Infinity;
    state.types = null;
  }

  function begin(segments) {
    forgetAnswer();
    state.controller = new AbortController();
    $("query").value = segments[2];
    // "auto" unless only the choice gives this lookup, so an address typed next is looked up as one
    $("kind").value = segments[0] === "rdata" && segments[1] !== "ip" ? "rdata" : "auto";
    document.title = `${segments[2]}: passive DNS`;
    $("status").dataset.lookup = segments.join("/"); // which lookup the status speaks of
    say(`looking up ${segments.join("/")} ...`, "loading");
    draw(); // the last answer goes: rows of one lookup are never shown under another's status
    return state.controller.signal;
  }

  function limitParameter() {
    const limit = parseInt($("limit").value, 10);
    return Number.isInteger(limit) && limit > 0 ? `?limit=${limit}` : "";
  }

  async function run(segments) {
    if (!key()) {
      state.pending = segments;
      askKey("Give an API key to search.");
      return;
    }
    const signal = begin(segments);
    const url = "/dnsdb/v2/lookup/" + segments.map(encodeURIComponent).join("/") + limitParameter();
    let ending = null;
    try {
      const response = await fetch(url, {
        headers: { "X-API-Key": key(), Accept: "application/x-ndjson" },
        signal, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer",
      });
      if (response.status === 403) {
        sessionStorage.removeItem(KEY_NAME);
        state.pending = segments;
        say("The server refused the key.", "error");
        askKey("The server refused that key (missing or unknown): give another.");
        return;
      }
      if (!response.ok) {
        const body = (await response.text()).trim().slice(0, 500);
        say(`${response.status}: ${body || response.statusText}`, "error");
        return;
      }
      ending = await readLines(response.body, signal);
    } catch (error) {
      if (error.name === "AbortError") return; // a newer lookup took over
      say(`The lookup failed: ${error.message}`, "error");
      draw();
      return;
    }
    draw();
    finish(ending);
  }

  /* Each line of the answer as it arrives; the closing condition, or null
     when the answer stopped without one (the connection was cut). */
  async function readLines(body, signal) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let ending = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        if (line.trim()) ending = take(JSON.parse(line)) || ending;
      }
      if (Date.now() - state.lastDrawn > RENDER_EVERY_MS && !signal.aborted) draw();
    }
    if (buffer.trim()) ending = take(JSON.parse(buffer)) || ending;
    return ending;
  }

  function take(line) {
    if (!line || typeof line !== "object") throw new SyntaxError("a line of the answer is not a JSON object");
    if (line.obj) {
      const row = line.obj;
      row.rdata = Array.isArray(row.rdata) ? row.rdata.map(String) : [String(row.rdata)];
      row.place = state.rows.length;
      state.rows.push(row);
      state.first = Math.min(state.first, row.time_first);
      state.last = Math.max(state.last, row.time_last);
      return null;
    }
    return line.cond && line.cond !== "begin" ? line : null;
  }

  function finish(ending) {
    const found = `${state.rows.length} result${state.rows.length === 1 ? "" : "s"}`;
    if (!ending) {
      say(`${found}; the answer was cut short (no closing line): there may be more.`, "error");
    } else if (ending.cond === "succeeded") {
      say(`${found}.`, "done");
    } else if (ending.cond === "limited") {
      say(`${found}: the limit was reached (${ending.msg || "there are more"}); raise "at most" to see more.`,
        "done");
    } else {
      say(`${found}; the server failed the lookup: ${ending.msg || ending.cond}`, "error");
    }
  }

  // ------------------------------------------------ filtering, sorting
  /* Seconds since the epoch of "2024-05-01", "2024-05-01 13:45[:10]" (UTC)
     or a number of seconds; null for nothing typed, NaN for anything else.
     A date alone, as an upper bound, means the end of that day. */
  function parseWhen(text, upper) {
    const typed = text.trim();
    if (!typed) return null;
    if (/^\d{1,12}$/.test(typed)) return Number(typed);
    const found = /^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2}))?)?Z?$/.exec(typed);
    if (!found) return NaN;
    const [year, month, day, hour, minute, second] = found.slice(1).map((v) => (v === undefined ? null : Number(v)));
    const end = upper ? 1 : 0;
    const millis = hour === null
      ? Date.UTC(year, month - 1, day) + end * 86399000
      : Date.UTC(year, month - 1, day, hour, minute, second === null ? end * 59 : second);
    const date = new Date(millis);
    if (date.getUTCMonth() !== month - 1 || date.getUTCDate() !== day || (hour !== null && hour > 23)) return NaN;
    return millis / 1000;
  }

  function bound(id, upper) {
    const input = $(id);
    const value = parseWhen(input.value, upper);
    input.setAttribute("aria-invalid", Number.isNaN(value) ? "true" : "false");
    return Number.isNaN(value) ? null : value;
  }

  function shownRows() {
    const type = $("type-filter").value;
    const from = bound("first-from", false);
    const until = bound("last-until", true);
    const rows = state.rows.filter((row) =>
      (!type || row.rrtype === type) && (from === null || row.time_first >= from) &&
      (until === null || row.time_last <= until));
    if (state.sort) {
      const column = state.sort;
      const sign = state.descending ? -1 : 1;
      rows.sort((a, b) => sign * compare(a, b, column) || a.place - b.place);
    }
    return rows;
  }

  function compare(a, b, column) {
    if (NUMERIC.has(column)) return a[column] - b[column];
    const left = sortText(a, column);
    const right = sortText(b, column);
    return left < right ? -1 : left > right ? 1 : 0;
  }

  function sortText(row, column) {
    if (column === "rdata") return row.rdata.join("\n");
    return row[column] || "";
  }

  function sortBy(column) {
    state.descending = state.sort === column ? !state.descending : false;
    state.sort = column;
    for (const header of document.querySelectorAll("#results th")) {
      const sorted = header.dataset.column === column;
      header.setAttribute("aria-sort", sorted ? (state.descending ? "descending" : "ascending") : "none");
    }
    draw();
  }

  function typeChoices() {
    const select = $("type-filter");
    const chosen = select.value;
    const types = [...new Set(state.rows.map((row) => row.rrtype))].sort();
    if (types.join(" ") === state.types) return; // an open select is left alone while rows stream in
    state.types = types.join(" ");
    const options = [new Option("all", "")].concat(types.map((type) => new Option(visible(type), type)));
    select.replaceChildren(...options);
    select.value = types.includes(chosen) ? chosen : "";
  }

  // ----------------------------------------------------------- drawing
  function draw() {
    state.lastDrawn = Date.now();
    typeChoices();
    const rows = shownRows();
    const any = state.rows.length > 0;
    $("filters").hidden = !any;
    $("results").hidden = !any;
    $("timeline-figure").hidden = !any;
    $("shown").textContent = `${rows.length} of ${state.rows.length} shown`;
    const body = document.createDocumentFragment(); // not a spread: an answer may have a million rows
    for (const row of rows) body.append(rowNode(row));
    $("results").tBodies[0].replaceChildren(body);
    drawTimeline(rows);
  }

  function rowNode(row) {
    const tr = document.createElement("tr");
    tr.dataset.place = String(row.place);
    const owner = lookupLink(["rrset", "name", row.rrname], row.rrname, "pivot-owner",
      `records owned by ${row.rrname}`);
    const rdata = document.createElement("div");
    for (const value of row.rdata) rdata.append(rdataNode(row.rrtype, value));
    const cells = {
      rrname: owner, rrtype: row.rrtype, bailiwick: row.bailiwick || "", rdata,
      time_first: when(row.time_first), time_last: when(row.time_last), count: String(row.count),
    };
    for (const [column, content] of Object.entries(cells)) {
      const td = document.createElement("td");
      td.dataset.column = column;
      if (typeof content === "string") td.textContent = visible(content);
      else td.append(content);
      tr.append(td);
    }
    return tr;
  }

  /* One record's data: an address links to rdata/ip; each name in it links
     to its own records (rrset/name) and, with the arrow, to the records
     that point to it (rdata/name); anything else is text. */
  function rdataNode(rrtype, text) {
    const line = document.createElement("div");
    line.className = "rdata";
    if (ADDRESS_TYPES.has(rrtype) && isAddress(text)) {
      line.append(lookupLink(["rdata", "ip", text], text, "pivot-ip", `records with the address ${text}`));
      return line;
    }
    const names = NAME_FIELDS[rrtype];
    if (!names) {
      line.textContent = visible(text);
      return line;
    }
    text.split(" ").forEach((field, index) => {
      if (index) line.append(" ");
      if (names.includes(index) && field && field !== ".") {
        line.append(lookupLink(["rrset", "name", field], field, "pivot-name", `records owned by ${field}`),
          lookupLink(["rdata", "name", field], "\u2190", "pivot-rdata", `records that point to ${field}`));
      } else {
        line.append(visible(field));
      }
    });
    return line;
  }

  function when(seconds) {
    return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19);
  }

  /* The API gives names and data escaped (\DDD) already; this makes sure
     nothing invisible or direction-changing reaches the page even so. */
  function visible(text) {
    return String(text).replace(/[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]/g,
      (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`);
  }

  function svg(tag, attributes, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = visible(text);
    return node;
  }

  /* One bar a row shown, from first to last seen, on the time axis of the
     whole answer (filtering leaves the axis where it is, so bars compare). */
  function drawTimeline(rows) {
    if (!state.rows.length) {
      $("timeline").replaceChildren();
      return;
    }
    const drawn = rows.slice(0, TIMELINE_MAX);
    const width = 1000, left = 330, right = 24, top = 6, rowHeight = 16, axis = 34;
    const plot = width - left - right;
    const start = state.first;
    const end = Math.max(state.last, state.first + 1);
    const x = (t) => left + ((t - start) / (end - start)) * plot;
    const height = top + drawn.length * rowHeight + axis;
    const chart = $("timeline");
    chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
    Object.assign(chart.dataset, { start, end, left, plot });
    const nodes = [];
    drawn.forEach((row, index) => {
      const y = top + index * rowHeight;
      nodes.push(svg("text", { class: "label", x: left - 8, y: y + 11, "text-anchor": "end" },
        clip(`${row.rrname} ${row.rrtype}`, 44)));
      const bar = svg("rect", {
        class: "bar", x: x(row.time_first), y: y + 3, height: rowHeight - 6,
        width: Math.max(2, x(row.time_last) - x(row.time_first)),
        "data-first": row.time_first, "data-last": row.time_last, "data-place": row.place,
      });
      bar.append(svg("title", {}, `${row.rrname} ${row.rrtype} ${row.rdata.join(" | ")}\n` +
        `${when(row.time_first)} to ${when(row.time_last)}, ${row.count} times`));
      nodes.push(bar);
    });
    const baseline = top + drawn.length * rowHeight + 4;
    nodes.push(svg("line", { class: "axis", x1: left, x2: left + plot, y1: baseline, y2: baseline }));
    const oneDay = when(start).slice(0, 10) === when(end).slice(0, 10);
    const [from, to] = oneDay ? [11, 19] : end - start > 2 * 86400 ? [0, 10] : [5, 16]; // of "YYYY-MM-DD HH:MM:SS"
    for (let tick = 0; tick <= 4; tick++) {
      const t = start + ((end - start) * tick) / 4;
      const anchor = tick === 0 ? "start" : tick === 4 ? "end" : "middle";
      nodes.push(svg("line", { class: "axis", x1: x(t), x2: x(t), y1: baseline, y2: baseline + 5 }));
      nodes.push(svg("text", { class: "tick", x: x(t), y: baseline + 19, "text-anchor": anchor },
        when(Math.round(t)).slice(from, to)));
    }
    chart.replaceChildren(...nodes);
    const day = oneDay ? `, on ${when(start).slice(0, 10)}` : "";
    $("timeline-note").textContent = rows.length > TIMELINE_MAX
      ? `The first ${TIMELINE_MAX} of ${rows.length} rows shown; filter to see others.`
      : `When each row was first and last seen (UTC${day}).`;
  }

  function clip(text, most) {
    return text.length > most ? `${text.slice(0, most - 1)}\u2026` : text;
  }

  // ------------------------------------------------------------- wiring
  function searched(event) {
    event.preventDefault();
    const typed = $("query").value.trim();
    if (!typed) return;
    const fragment = fragmentOf(lookupOf(typed, $("kind").value));
    if (location.hash === fragment) run(segmentsOf(fragment));
    else location.hash = fragment; // hashchange runs it, and Back returns to the previous lookup
  }

  function fragmentChanged() {
    if (!location.hash || location.hash === "#") return;
    let segments;
    try {
      segments = segmentsOf(location.hash);
    } catch (error) {
      forgetAnswer();
      $("status").dataset.lookup = "";
      say(error.message, "error");
      draw();
      return;
    }
    run(segments);
  }

  function start() {
    $("search").addEventListener("submit", searched);
    $("key-form").addEventListener("submit", keyGiven);
    $("forget-key").addEventListener("click", forgetKey);
    $("type-filter").addEventListener("change", draw);
    for (const id of ["first-from", "last-until"]) $(id).addEventListener("input", draw);
    for (const header of document.querySelectorAll("#results th")) {
      header.setAttribute("aria-sort", "none");
      header.querySelector("button").addEventListener("click", () => sortBy(header.dataset.column));
    }
    window.addEventListener("hashchange", fragmentChanged);
    if (key()) $("forget-key").hidden = false;
    else askKey();
    fragmentChanged();
  }

  start();
})();
