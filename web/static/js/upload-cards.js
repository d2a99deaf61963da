/*
 * capsearch uploads, the cards: one per file in #uploads, with a local preview, a <progress>, a
 * cancel/remove button and a status line `#upload-<id>-status`. The page draws the status line
 * (waiting, uploading, already stored, a failure) only until the server's fragments replace it
 * (queued → captioning → done | failed); syncStage copies whatever the line says onto the card and
 * reads a new stage out through the announcer.
 *
 * Needs: #uploads, capsearch.announce (page.js) and capsearch.uploads (upload-lookup.js, loaded
 * before). Puts `cards` on capsearch.uploads, for upload.js and upload-sender.js:
 *
 *   cards.makeCard(u, objectUrl)    a new card at the top of the list; sets u.card, u.progress,
 *                                   u.pct, u.button, u.objectUrl
 *   cards.statusEl(u)               the card's status line (the server may have replaced it)
 *   cards.drawStage(u, stage, detail)   'waiting' | 'uploading' | 'failed' (with a detail)
 *   cards.drawStored(u, image)      "Already in your collection", linked to the stored image
 *   cards.drawProgress(u, bytes)    the bar and the percentage
 *   cards.syncStage(u)              after the status line changed
 *   cards.humanSize(n)              "1.5 MB", "12 KB", "10 B"
 */
(function () {
  'use strict';

  var list = document.getElementById('uploads');
  if (!list) return;
  var announce = window.capsearch.announce;

  var LABELS = { waiting: 'Waiting', uploading: 'Uploading', stored: 'Already in your collection', failed: 'Failed' };

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function humanSize(n) {
    var mb = n / (1024 * 1024);
    if (mb >= 1) return (Number.isInteger(mb) ? mb : mb.toFixed(1)) + ' MB';
    if (n >= 1024) return Math.round(n / 1024) + ' KB';
    return n + ' B';
  }

  function makeCard(u, objectUrl) {
    var li = el('li', 'upload');
    li.id = 'upload-' + u.id;
    li.setAttribute('data-stage', 'waiting');
    var thumb = el('div', 'upload-thumb');
    if (objectUrl) {
      var img = el('img');
      img.src = objectUrl;
      img.alt = '';
      thumb.appendChild(img);
    }
    li.appendChild(thumb);
    var info = el('div', 'upload-info');
    var head = el('div', 'upload-head');
    var name = el('span', 'upload-name', u.name);
    name.title = u.name;
    head.appendChild(name);
    head.appendChild(el('span', 'upload-size', humanSize(u.size)));
    info.appendChild(head);
    var bar = el('div', 'upload-bar');
    u.progress = el('progress', 'upload-progress');
    u.progress.max = 100;
    u.progress.value = 0;
    u.progress.setAttribute('aria-label', 'Upload progress of ' + u.name);
    bar.appendChild(u.progress);
    u.pct = el('span', 'upload-pct', '0%');
    bar.appendChild(u.pct);
    info.appendChild(bar);
    var status = el('div', 'card-status');
    status.id = 'upload-' + u.id + '-status';
    info.appendChild(status);
    li.appendChild(info);
    u.button = el('button', 'upload-cancel', '×');
    u.button.type = 'button';
    u.button.setAttribute('aria-label', 'Cancel upload of ' + u.name);
    li.appendChild(u.button);
    u.card = li;
    u.objectUrl = objectUrl;
    list.insertBefore(li, list.firstChild);
  }

  function statusEl(u) {
    return document.getElementById('upload-' + u.id + '-status');
  }

  // The page draws the status line only until the server takes over (or to show a failure).
  function drawStage(u, stage, detail) {
    var s = statusEl(u);
    if (!s) return;
    var current = s.getAttribute('data-stage');
    if (stage !== 'failed' && current && !(current in { waiting: 1, uploading: 1 })) return;
    if (stage === 'failed' && current === 'failed') return;
    s.setAttribute('data-stage', stage);
    s.textContent = '';
    s.appendChild(el('span', 'stage-badge stage-' + stage, LABELS[stage] || stage));
    if (detail) s.appendChild(el('p', 'error-detail', detail));
    syncStage(u);
  }

  // Nothing was sent: the bytes are stored already. The collection's card is the one that follows
  // the image from here (captioning → done), so this card links to it.
  function drawStored(u, image) {
    var s = statusEl(u);
    if (!s) return;
    s.setAttribute('data-stage', 'stored');
    s.textContent = '';
    s.appendChild(el('span', 'stage-badge stage-stored', LABELS.stored));
    if (image.status === 'ready') {
      if (image.caption) s.appendChild(el('p', 'caption', image.caption));
      var img = u.card.querySelector('.upload-thumb img');
      if (img) {
        img.src = image.thumbnail_url;
        URL.revokeObjectURL(u.objectUrl);
        u.objectUrl = null;
      }
    }
    var link = el('a', 'upload-link');
    if (document.getElementById('image-' + image.id)) {
      link.href = '#image-' + image.id;
      link.textContent = 'Show it in the collection';
    } else {
      // Older than the cards this page shows.
      link.href = image.url;
      link.target = '_blank';
      link.rel = 'noopener';
      link.textContent = 'Open the stored image';
    }
    s.appendChild(link);
    u.card.classList.add('never-sent');
    syncStage(u);
  }

  function drawProgress(u, bytes) {
    var pct = u.size ? Math.min(100, Math.floor((bytes / u.size) * 100)) : 100;
    u.progress.value = pct;
    u.pct.textContent = pct + '%';
  }

  function syncStage(u) {
    var s = statusEl(u);
    var stage = s ? s.getAttribute('data-stage') : null;
    if (!stage || stage === u.lastStage) return;
    u.lastStage = stage;
    u.card.setAttribute('data-stage', stage);
    if (stage === 'done' || stage === 'failed' || u.state === 'finished') {
      u.button.setAttribute('aria-label', 'Remove ' + u.name + ' from this list');
    }
    if (stage === 'waiting' || stage === 'uploading') return;
    var extra = s.querySelector('.caption, .error-detail');
    var label = s.querySelector('.stage-badge');
    announce(u.name + ': ' + (label ? label.textContent : stage) + (extra ? '. ' + extra.textContent : ''));
  }

  window.capsearch.uploads.cards = {
    makeCard: makeCard,
    statusEl: statusEl,
    drawStage: drawStage,
    drawStored: drawStored,
    drawProgress: drawProgress,
    syncStage: syncStage,
    humanSize: humanSize,
  };
})();
