"""JavaScript the browser test runs in the page. Pass functions, not bare expressions: Playwright evals
expressions, which the page's CSP (no unsafe-eval) refuses. Init scripts are not subject to the CSP."""

# Runs before the page's scripts (init scripts are not subject to the page's CSP): logs what goes over
# the socket, can hold back binary frames, and can drop the connection the way a network does.
SOCKET_PROBE_JS = """
(() => {
  const log = window.__wsLog = [];
  window.__binaryBudget = Infinity;
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    window.__socket = this;
    if (typeof data === 'string') {
      log.push(['out', JSON.parse(data)]);
    } else {
      if (window.__binaryBudget <= 0) return;  // lost on the way
      window.__binaryBudget--;
    }
    return send.call(this, data);
  };
  document.addEventListener('capsearch:message', (e) => log.push(['in', e.detail]));
  window.__dropSocket = () => {
    const s = window.__socket, onclose = s.onclose;
    s.onclose = null;
    s.close(4000, 'test: connection lost');  // not 1000/1001, so the server keeps the partials
    onclose.call(s, new CloseEvent('close', { code: 1006 }));  // what ws.js sees on a lost network
  };
})();
"""

MAX_IN_PROGRESS_JS = """
() => {
  const active = new Set();
  let most = 0;
  for (const [dir, m] of window.__wsLog) {
    if (dir === 'out' && m.type === 'upload.start') active.add(m.id);
    if (dir === 'in' && (m.type === 'upload.done' || m.type === 'upload.rejected')) active.delete(m.id);
    most = Math.max(most, active.size);
  }
  return most;
}
"""

# How many JSON messages of one type the page sent over its socket (SOCKET_PROBE_JS logs them).
SENT_JS = "(type) => window.__wsLog.filter(([d, m]) => d === 'out' && m.type === type).length"
# True once the page has received `n` socket messages of one type.
RECEIVED_JS = "([type, n]) => window.__wsLog.filter(([d, m]) => d === 'in' && m.type === type).length === n"

DROP_JS = """
async ([b64, name, type]) => {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const dt = new DataTransfer();
  dt.items.add(new File([bytes], name, { type }));
  const zone = document.getElementById('dropzone');
  for (const kind of ['dragenter', 'dragover', 'drop']) {
    zone.dispatchEvent(new DragEvent(kind, { dataTransfer: dt, bubbles: true, cancelable: true }));
  }
}
"""

ALL_DONE_JS = """
(n) => {
  const cards = [...document.querySelectorAll('#uploads .upload')];
  return cards.length === n && cards.every(c =>
    c.querySelector('progress').value === 100 &&
    c.querySelector('.card-status').dataset.stage === 'done' &&
    c.querySelector('.card-status .caption')?.textContent.trim());
}
"""

# ---- voice search ---------------------------------------------------------------------------------

# Runs after SOCKET_PROBE_JS: logs each binary frame the page sends (its 3 header bytes and size) in
# order with the JSON messages.
FRAME_PROBE_JS = """
(() => {
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    if (data instanceof ArrayBuffer) {
      const [kind, encoding, n] = new Uint8Array(data, 0, 3);
      window.__wsLog.push(['bin', { type: 'frame', kind, encoding, n, size: data.byteLength }]);
    }
    return send.call(this, data);
  };
})();
"""
# A partial shown, matching `pattern`, that covers at least `seconds` of the recording.
PARTIAL_JS = """
([pattern, seconds]) => {
  const t = document.getElementById('voice-transcript');
  const covered = window.__wsLog.some(([d, m]) => m.type === 'voice.partial' && m.seconds >= seconds);
  return covered && t.dataset.state === 'partial' && new RegExp(pattern, 'i').test(t.textContent);
}
"""
CLOCK_JS = """
(seconds) => {
  const [m, s] = document.getElementById('voice-time').textContent.split(' / ')[0].split(':');
  return Number(m) * 60 + Number(s) >= seconds;
}
"""
PLAYBACK_JS = """
() => {
  const a = document.getElementById('voice-audio');
  return a.src.startsWith('blob:') && Number.isFinite(a.duration) && a.duration > 0 ? a.duration : 0;
}
"""
# Requests the page made to the search box's endpoint (Resource Timing lists htmx's XHRs too).
UI_SEARCHES_JS = (
    "() => performance.getEntriesByType('resource').filter(e => e.name.includes('/ui/search')).length"
)
# Hands the page a server message as if its socket had carried it (capsearch-ws.js dispatches every
# control message this way): drives the page through sequences a fake server would have to script.
INJECT_JS = "(msg) => { document.dispatchEvent(new CustomEvent('capsearch:message', { detail: msg })); }"
# The computed style of an element, for what a person sees of it.
STYLE_JS = """
([selector, property]) => getComputedStyle(document.querySelector(selector)).getPropertyValue(property)
"""
