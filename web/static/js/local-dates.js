/*
 * capsearch local dates: the upload date on every card (partials/image_card.html) in the reader's own
 * time zone and language. The server renders cards once for every open page, so it writes the date in
 * UTC (`<time class="card-date" datetime="…Z">10 Jan 2026</time>`); this rewrites the text as the
 * browser's local day and the tooltip as its local day and time. A card that arrives later (an upload,
 * a search, a socket fragment) is rewritten when htmx loads it. Without Intl the UTC text stays.
 *
 * Needs: htmx. Loaded after page.js; shares nothing.
 */
(function () {
  'use strict';

  var day;
  var full;
  try {
    day = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', year: 'numeric' });
    full = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  } catch {
    return; // the server's UTC text is still right, only not local
  }

  function localize(root) {
    var pending = 'time.card-date:not([data-local])';
    var times = Array.prototype.slice.call(root.querySelectorAll(pending));
    if (root.matches && root.matches(pending)) times.push(root);
    times.forEach(function (el) {
      var when = new Date(el.getAttribute('datetime'));
      if (isNaN(when.getTime())) return;
      el.textContent = day.format(when);
      el.title = 'Uploaded ' + full.format(when);
      el.setAttribute('data-local', '');
    });
  }

  localize(document); // what the server rendered (also if htmx started before this script ran)
  // Then every swap's new content, the socket's out-of-band fragments included.
  htmx.onLoad(localize);
})();
