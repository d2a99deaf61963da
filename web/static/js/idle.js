/*
 * capsearch idle gallery (docs/protocol.md, "Idle gallery"): when the page has been left alone for
 * `data-idle-seconds` (on #gallery, from the server's settings), ask the server for a few example
 * photos to caption live; when the person is back, tell it to stop.
 *
 * - Activity: mousemove (a real one: Chromium sends moves without motion when the layout shifts
 *   under a resting pointer), pointerdown, keydown, wheel, touchstart, scroll (but not the scroll
 *   that scroll anchoring makes while the gallery grows above the viewport), and `capsearch:activity`
 *   dispatched on document by other scripts (e.g. while a voice recording runs with no input events).
 * - One `gallery.request` per idle period. The idle clock does not run, and nothing is requested,
 *   while the socket is closed, the tab is hidden, an upload is under way (its card is still changing),
 *   a search is shown (the gallery is hidden then, so examples would be captioned for nobody), a
 *   caption is being edited, a dialog is open, or the microphone records (#voice-button pressed).
 *   The clock starts again when that ends.
 * - The first activity after a request sends `gallery.cancel` and marks the cards still captioning as
 *   stopped ("Stopped — you're back"); captioned ones stay. Hiding the tab does the same. A later idle
 *   period brings a fresh gallery: the server's #gallery fragment replaces this one.
 */
(function () {
  'use strict';

  var placeholder = document.getElementById('gallery');
  if (!placeholder) return;
  var IDLE_MS = Math.max(250, (parseFloat(placeholder.getAttribute('data-idle-seconds')) || 8) * 1000);
  var BLOCKED_RECHECK_MS = Math.min(1000, IDLE_MS);
  var LAYOUT_SCROLL_MS = 400; // a scroll this soon after a gallery change is the layout's, not a person's
  var BUSY_UPLOAD = '#uploads .upload:not([data-stage="done"]):not([data-stage="failed"]):not([data-stage="stored"])';
  var socket = window.capsearch.socket;
  var announce = window.capsearch.announce;

  var requested = false; // a gallery.request went out this idle period and was not cancelled
  var lastActivity = Date.now();
  var lastGalleryChange = 0;
  var lastPointer = null;
  var timer = null;
  var shownGallery = null;

  // ---- when the page may ask -------------------------------------------------------------------

  function blocked() {
    return !socket.isOpen() ||
      document.visibilityState !== 'visible' ||
      document.querySelector(BUSY_UPLOAD) !== null ||
      document.querySelector('#search-results .search-panel') !== null ||
      document.querySelector('.card-editing, dialog[open], #voice-button[aria-pressed="true"]') !== null;
  }

  function schedule(ms) {
    if (timer !== null) window.clearTimeout(timer);
    timer = window.setTimeout(tick, ms);
  }

  function tick() {
    timer = null;
    if (requested || document.visibilityState !== 'visible') return; // activity or visibility restarts
    if (blocked()) {
      lastActivity = Date.now(); // idle time counts from when the page is free again
      schedule(BLOCKED_RECHECK_MS);
      return;
    }
    var left = lastActivity + IDLE_MS - Date.now();
    if (left > 0) { schedule(left); return; }
    requested = true;
    socket.send({ type: 'gallery.request' });
  }

  // ---- the person is back ----------------------------------------------------------------------

  function stopPending(label) {
    var gallery = document.getElementById('gallery');
    if (!gallery) return;
    Array.prototype.forEach.call(gallery.querySelectorAll('.card-example[data-stage="captioning"]'), function (card) {
      card.setAttribute('data-stage', 'stopped');
      var skeleton = card.querySelector('.caption-skeleton');
      if (skeleton) skeleton.remove();
      var img = card.querySelector('.card-media img');
      if (img) img.alt = 'Example photo, not captioned';
      var badge = card.querySelector('.stage-badge');
      if (!badge) {
        badge = document.createElement('span');
        card.querySelector('.card-body').insertBefore(badge, card.querySelector('.card-foot'));
      }
      badge.className = 'stage-badge stage-stopped';
      badge.textContent = label;
    });
  }

  function activity() {
    lastActivity = Date.now();
    if (requested) {
      requested = false;
      socket.send({ type: 'gallery.cancel' });
      stopPending('Stopped — you\'re back');
    }
    if (timer === null && document.visibilityState === 'visible') schedule(IDLE_MS);
  }

  function onPointerMove(e) {
    var at = e.screenX + ',' + e.screenY;
    if (at === lastPointer) return; // no motion: the page moved under a resting pointer
    lastPointer = at;
    activity();
  }

  function onScroll() {
    if (Date.now() - lastGalleryChange < LAYOUT_SCROLL_MS) return;
    activity();
  }

  var passive = { capture: true, passive: true };
  document.addEventListener('mousemove', onPointerMove, passive);
  ['pointerdown', 'keydown', 'wheel', 'touchstart'].forEach(function (name) {
    document.addEventListener(name, activity, passive);
  });
  document.addEventListener('scroll', onScroll, passive);
  document.addEventListener('capsearch:activity', activity);

  document.addEventListener('visibilitychange', function () {
    if (document.visibilityState === 'visible') {
      lastActivity = Date.now();
      schedule(IDLE_MS);
      return;
    }
    if (timer !== null) { window.clearTimeout(timer); timer = null; }
    if (requested) {
      requested = false;
      socket.send({ type: 'gallery.cancel' }); // examples for a hidden tab would be captioned for nobody
      stopPending('Stopped — you\'re back');
    }
  });

  // ---- the socket ------------------------------------------------------------------------------

  socket.onOpen(function () {
    lastActivity = Date.now();
    if (!requested) schedule(IDLE_MS);
  });

  socket.onClose(function () {
    if (requested) {
      // The server drops a closed connection's gallery: its pending captions will never come.
      requested = false;
      stopPending('Stopped — connection lost');
    }
  });

  socket.afterMessage(function () {
    var gallery = document.getElementById('gallery');
    if (!gallery || gallery === placeholder && gallery.hidden) return;
    lastGalleryChange = Date.now();
    // Skeletons that arrive after the person came back were already cancelled on the server.
    if (!requested) stopPending('Stopped — you\'re back');
    var id = gallery.getAttribute('data-gallery-id');
    if (id && id !== shownGallery) {
      shownGallery = id;
      var n = gallery.querySelectorAll('.card-example').length;
      announce('While the page is idle: ' + n + ' example photo' + (n === 1 ? '' : 's') +
        ', captioned live. They are not added to your collection.');
    }
  });

  schedule(IDLE_MS);
})();
