/*
 * capsearch page: what every page script shares, as `window.capsearch`. Loaded before the others.
 *
 * capsearch.socket — the page's one WebSocket (docs/protocol.md). htmx's ws extension opens it
 * (<body ws-connect="/ws">) and, after an abnormal close (1006, 1011, 1012, 1013), opens a new one
 * with full-jitter exponential backoff (htmx.config.wsReconnectDelay: up to 64 s); capsearch-ws.js
 * swaps the fragments it carries and dispatches the other messages as `capsearch:message` events.
 * This module keeps the connection's bookkeeping in one place and drives the #connection indicator:
 *
 *   state()              'connecting' | 'open' | 'reconnecting' | 'closed' (closed: no retry comes)
 *   isOpen()
 *   send(msg)            a JSON message; binary frames go through sendBinary(arrayBuffer). Both
 *                        return false, sending nothing, while the socket is not open.
 *   onOpen(fn)           fn() after every (re)connect: what a new connection needs sent again
 *   onClose(fn)          fn(code, reconnecting)
 *   onMessage(type, fn)  fn(msg) for each control message of that type; 'voice.*' names a family
 *   afterMessage(fn)     fn() once htmx has swapped whatever a message carried
 *
 * capsearch.toast(message, level) — a toast the page itself decides to show (level 'error', the
 * default, or 'info'); the server's arrive as fragments (partials/toast.html). Either kind is dropped
 * when the same text is already up, and dismissed by its button or after a while.
 * capsearch.announce(text) — read out by screen readers through the #announcer live region.
 */
(function () {
  'use strict';

  var RECONNECTING = [1006, 1011, 1012, 1013]; // the close codes after which ws.js opens a new socket
  var TOAST_MS = { error: 10000, info: 6000 };

  // ---- announcements and toasts -------------------------------------------------------------

  function announce(text) {
    var announcer = document.getElementById('announcer');
    if (!announcer || !text) return;
    // Emptied first: a live region reads a change, and the same sentence twice is no change.
    announcer.textContent = '';
    window.setTimeout(function () { announcer.textContent = text; }, 50);
  }

  function toast(message, level) {
    var toasts = document.getElementById('toasts');
    if (!toasts) return;
    var t = document.createElement('div');
    t.className = 'toast toast-' + (level || 'error');
    t.setAttribute('role', 'alert');
    var text = document.createElement('span');
    text.className = 'toast-message';
    text.textContent = message;
    var close = document.createElement('button');
    close.type = 'button';
    close.className = 'toast-close';
    close.setAttribute('aria-label', 'Dismiss');
    close.textContent = '×';
    t.appendChild(text);
    t.appendChild(close);
    toasts.appendChild(t);
  }

  function toastText(node) {
    return node.textContent.replace('×', '').trim();
  }

  function watchToasts(toasts) {
    toasts.addEventListener('click', function (e) {
      var btn = e.target.closest('.toast-close');
      if (btn) btn.closest('.toast').remove();
    });
    // Observed rather than done in toast(): the server's toasts come in through htmx swaps.
    new MutationObserver(function (records) {
      records.forEach(function (r) {
        Array.prototype.forEach.call(r.addedNodes, function (node) {
          if (!(node instanceof HTMLElement) || !node.classList.contains('toast')) return;
          var text = toastText(node);
          var twin = Array.prototype.some.call(toasts.querySelectorAll('.toast'), function (t) {
            return t !== node && toastText(t) === text;
          });
          if (twin) { node.remove(); return; }
          var level = node.classList.contains('toast-error') ? 'error' : 'info';
          window.setTimeout(function () { node.remove(); }, TOAST_MS[level]);
        });
      });
    }).observe(toasts, { childList: true });
  }

  // ---- the socket ---------------------------------------------------------------------------

  var wrapper = null; // ws.js's public interface of the current connection
  var state = 'connecting';
  var opened = [];
  var closed = [];
  var swapped = [];
  var handlers = {}; // message type (or 'family.*') → [fn]

  // One script's handler that throws must not keep the others from hearing about the event.
  function callEach(fns, args) {
    fns.slice().forEach(function (fn) {
      try {
        fn.apply(null, args);
      } catch (err) {
        window.reportError(err);
      }
    });
  }

  function setIndicator(name, text) {
    var conn = document.getElementById('connection');
    if (!conn) return;
    conn.setAttribute('data-state', name);
    var t = conn.querySelector('.conn-text');
    if (t) t.textContent = text;
  }

  function transmit(data) {
    if (state !== 'open' || !wrapper) return false;
    wrapper.send(data);
    return true;
  }

  var socket = {
    state: function () { return state; },
    isOpen: function () { return state === 'open'; },
    send: function (msg) { return transmit(JSON.stringify(msg)); },
    sendBinary: function (buffer) { return transmit(buffer); },
    onOpen: function (fn) {
      opened.push(fn);
      // A script that arrives on an open socket still gets its start.
      if (state === 'open') callEach([fn], []);
    },
    onClose: function (fn) { closed.push(fn); },
    onMessage: function (type, fn) { (handlers[type] = handlers[type] || []).push(fn); },
    afterMessage: function (fn) { swapped.push(fn); },
  };

  document.addEventListener('htmx:wsConnecting', function () {
    if (state === 'open') return;
    if (state !== 'reconnecting') state = 'connecting';
    setIndicator('connecting', 'Connecting…');
  });

  document.addEventListener('htmx:wsOpen', function (e) {
    wrapper = e.detail.socketWrapper;
    state = 'open';
    setIndicator('open', 'Live');
    callEach(opened, []);
  });

  document.addEventListener('htmx:wsClose', function (e) {
    var code = e.detail.event && e.detail.event.code;
    var again = RECONNECTING.indexOf(code) >= 0;
    state = again ? 'reconnecting' : 'closed';
    // Frames ws.js queued while the socket was closing belong to the old connection: on a new one
    // the server would not know their uploads or recordings, and the scripts resume on open instead.
    if (e.detail.socketWrapper && e.detail.socketWrapper.queue) e.detail.socketWrapper.queue.length = 0;
    setIndicator('closed', again ? 'Reconnecting…' : 'Disconnected — reload the page');
    callEach(closed, [code, again]);
  });

  document.addEventListener('capsearch:message', function (e) {
    var msg = e.detail;
    var family = msg.type.indexOf('.') > 0 ? msg.type.slice(0, msg.type.indexOf('.')) + '.*' : null;
    var fns = (handlers[msg.type] || []).concat(family && handlers[family] || []);
    callEach(fns, [msg]);
  });

  document.addEventListener('htmx:wsAfterMessage', function () { callEach(swapped, []); });

  var toasts = document.getElementById('toasts');
  if (toasts) watchToasts(toasts);

  window.capsearch = { socket: socket, toast: toast, announce: announce };
})();
