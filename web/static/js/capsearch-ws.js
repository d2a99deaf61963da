/*
 * capsearch-ws: a tiny htmx extension for the page's WebSocket (docs/protocol.md).
 *
 * The server sends JSON text frames. `{"type": "fragment", "html": "..."}` is handed to htmx, which
 * performs the out-of-band swaps named in the html (hx-swap-oob). Every other message (acks etc.)
 * is dispatched as a `capsearch:message` CustomEvent on document (detail = the parsed object) and
 * swaps nothing. A collection card `#image-<id>` the page does not show yet is inserted at the top
 * of #collection instead of being dropped; an image's removal fragment (hx-swap-oob="delete") lowers
 * the collection count. After any fragment about an image, `capsearch:images-changed` is dispatched
 * on document (detail.ids = the image ids), so an open search can run again. page.js routes the
 * messages to the scripts that asked for them (capsearch.socket.onMessage).
 *
 * Use: <body hx-ext="ws,capsearch-ws" ws-connect="/ws">, with htmx and ws.js loaded first.
 */
(function () {
  'use strict';

  // A removal of an element this page does not show is dropped: htmx would log it as an error.
  // From the socket, a card whose own delete request is in flight (search.js marks it) is left to
  // that request's answer: removed now, it would take the button along, and htmx handles the answer
  // to a detached element without this extension, so nothing would drop that answer's absent removals.
  function dropAbsentRemovals(tpl, fromSocket) {
    var changed = false;
    Array.prototype.slice.call(tpl.content.children).forEach(function (el) {
      if (el.getAttribute('hx-swap-oob') !== 'delete') return;
      var target = document.getElementById(el.id);
      if (target && !(fromSocket && target.classList.contains('card-deleting'))) return;
      el.remove();
      changed = true;
    });
    return changed;
  }

  function insertNewCards(html) {
    var tpl = document.createElement('template');
    tpl.innerHTML = html;
    var changed = false;
    var ids = [];
    Array.prototype.slice.call(tpl.content.children).forEach(function (el) {
      if (!/^image-\d+$/.test(el.id)) return;
      ids.push(parseInt(el.id.slice(6), 10));
      var oob = el.getAttribute('hx-swap-oob');
      // Counted whether or not this page shows the card: the count is of the whole collection.
      if (oob === 'delete') { bumpCount(-1); return; }
      if (document.getElementById(el.id)) return;
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
      bumpCount(1);
    });
    if (dropAbsentRemovals(tpl, true)) changed = true;
    if (ids.length) {
      // After htmx has swapped this message: a search that runs again then sees the page as it is now.
      window.setTimeout(function () {
        document.dispatchEvent(new CustomEvent('capsearch:images-changed', { detail: { ids: ids } }));
      }, 0);
    }
    return changed ? tpl.innerHTML : html;
  }

  function bumpCount(by) {
    var count = document.getElementById('collection-count');
    if (!count) return;
    var total = Math.max(0, (parseInt(count.getAttribute('data-total'), 10) || 0) + by);
    count.setAttribute('data-total', String(total));
    count.textContent = total + (total === 1 ? ' image' : ' images');
  }

  htmx.defineExtension('capsearch-ws', {
    transformResponse: function (text, xhr) {
      if (typeof text !== 'string') return text;
      // Ordinary htmx responses (ws.js passes no xhr) pass through, but for removals of absent cards.
      if (xhr) {
        if (text.indexOf('hx-swap-oob="delete"') < 0) return text;
        var tpl = document.createElement('template');
        tpl.innerHTML = text;
        return dropAbsentRemovals(tpl, false) ? tpl.innerHTML : text;
      }
      var msg;
      try {
        msg = JSON.parse(text);
      } catch {
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
