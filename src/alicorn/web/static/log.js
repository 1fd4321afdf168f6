// Follows a build's log while it is written: the page carries the text so far in <pre id="log">
// and, in data attributes, the stream's URL and the byte offset the text ends at.  The stream
// (server-sent events) sends "append" events {offset, text} and one "end" event {state}.
(function () {
  "use strict";
  var pre = document.getElementById("log");
  var state = document.getElementById("log-state");
  var conn = document.getElementById("log-conn");
  if (!pre || !window.EventSource || pre.dataset.complete === "true") { return; }
  var url = pre.dataset.stream;
  var offset = parseInt(pre.dataset.offset || "0", 10) || 0;
  var source = null;
  var failures = 0;
  var ended = false;

  function atBottom() {
    var page = document.scrollingElement || document.documentElement;
    var pageBottom = page.scrollHeight - page.scrollTop - page.clientHeight < 40;
    var preBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
    return pageBottom && preBottom;
  }

  function append(text) {
    var follow = atBottom();
    pre.appendChild(document.createTextNode(text));  // text, never markup
    if (follow) {
      pre.scrollTop = pre.scrollHeight;
      window.scrollTo(0, document.body.scrollHeight);
    }
  }

  function setState(text, cls) {
    state.textContent = text;
    state.className = "badge state-" + cls;
  }

  function connect() {
    source = new EventSource(url + "?offset=" + offset);
    source.addEventListener("open", function () {
      failures = 0;
      conn.textContent = "";
    });
    source.addEventListener("append", function (event) {
      var data;
      try { data = JSON.parse(event.data); } catch (e) { return; }
      if (typeof data.offset === "number" && data.offset <= offset) { return; }  // seen
      if (typeof data.text === "string") { append(data.text); }
      if (typeof data.offset === "number") {
        offset = data.offset;
        pre.dataset.offset = String(offset);
      }
    });
    source.addEventListener("end", function (event) {
      ended = true;
      source.close();
      setState("complete", "complete");
      pre.dataset.complete = "true";
      conn.textContent = "";
      var build = document.getElementById("log-build-state");
      try {
        var data = JSON.parse(event.data);
        if (build && data && typeof data.state === "string") {
          build.textContent = data.state;
          build.className = "badge state-" + data.state.toLowerCase().replace(/[^a-z_]/g, "");
        }
      } catch (e) { /* the final state is only shown */ }
    });
    source.addEventListener("error", function () {
      if (ended) { return; }
      // Reconnect from the last offset we have (the browser's own retry would not after an
      // error status), backing off up to 30 s -- unless the log is gone for good: a build
      // that ended without writing it (its raw text answers 404).
      source.close();
      failures += 1;
      conn.textContent = "reconnecting…";
      gone(function () {
        window.setTimeout(connect, Math.min(30000, 1000 * Math.pow(2, failures - 1)));
      });
    });
  }

  function gone(otherwise) {
    if (!window.fetch) { otherwise(); return; }
    var raw = url.replace(/\/stream$/, "") + "?limit=1&offset=" + offset;
    window.fetch(raw, {credentials: "same-origin"}).then(function (answer) {
      if (answer.status !== 404) { otherwise(); return; }
      ended = true;
      setState("not written", "failed");
      var build = document.getElementById("log-build-state");
      if (build) { build.textContent = "ended"; build.className = "badge state-complete"; }
      conn.textContent = "the build ended without writing this log; reload the page to see why";
    }, otherwise);
  }

  connect();
}());
