/*
 * capsearch-ws: a tiny htmx extension for the page's WebSocket (docs/protocol.md).
 *
 * The server sends JSON text frames. `{"type": "fragment", "html": "..."}` is handed to htmx, which
 * performs the out-of-band swaps named in the html (hx-swap-oob). Every other message (acks etc.)
 * is dispatched as a `capsearch:message` CustomEvent on document (detail = the parsed object) and
 * swaps nothing. A collection card `#image-<id>` the page does not show yet is inserted at the top
 * of #collection instead of being dropped.
 *
 * Use: <body hx-ext="ws,capsearch-ws" ws-connect="/ws">, with htmx and ws.js loaded first.
 */
(function () {
  'use strict';

  function insertNewCards(html) {
    var tpl = document.createElement('template');
    tpl.innerHTML = html;
    var changed = false;
    Array.prototype.slice.call(tpl.content.children).forEach(function (el) {
      if (!/^image-\d+$/.test(el.id) || document.getElementById(el.id)) return;
      var oob = el.getAttribute('hx-swap-oob');
      if (oob !== null && oob !== 'true' && oob !== 'outerHTML') return;
      if (!document.getElementById('collection')) return;
      // A non-inline oob swap inserts the wrapper's children: the card itself, at the top.
      var wrap = document.createElement('div');
      wrap.setAttribute('hx-swap-oob', 'afterbegin:#collection');
      el.removeAttribute('hx-swap-oob');
      el.classList.add('card-new');
      el.replaceWith(wrap);
      wrap.appendChild(el);
      changed = true;
      bumpCount();
    });
    return changed ? tpl.innerHTML : html;
  }

  function bumpCount() {
    var count = document.getElementById('collection-count');
    if (!count) return;
    var total = (parseInt(count.getAttribute('data-total'), 10) || 0) + 1;
    count.setAttribute('data-total', String(total));
    count.textContent = total + (total === 1 ? ' image' : ' images');
  }

  htmx.defineExtension('capsearch-ws', {
    transformResponse: function (text, xhr, elt) {
      // Only socket messages (ws.js passes no xhr); ordinary htmx responses pass through.
      if (xhr || typeof text !== 'string') return text;
      var msg;
      try {
        msg = JSON.parse(text);
      } catch (e) {
        return text;
      }
      if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') return '';
      if (msg.type === 'fragment') {
        return typeof msg.html === 'string' ? insertNewCards(msg.html) : '';
      }
      document.dispatchEvent(new CustomEvent('capsearch:message', { detail: msg }));
      return '';
    },
  });
})();
