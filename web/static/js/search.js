/*
 * capsearch search box and card actions. htmx does the requests (attributes in base.html and the
 * card partial); this script only does what markup cannot:
 *
 * - runs an open search again when images change (`capsearch:images-changed` from capsearch-ws.js),
 *   at most once per REFRESH_MS so a burst of captions does not flood the server, and never while a
 *   caption is being edited inside the results (that would throw the person's typing away);
 * - opens and closes a card's caption form (Edit, Cancel, Escape) and puts focus where it belongs;
 * - reads out search summaries through the page's live announcer (not those of live voice hits);
 * - "/" jumps to the search box, and Enter in it never reloads the page.
 */
(function () {
  'use strict';

  var form = document.getElementById('search-form');
  var input = document.getElementById('search-input');
  var results = document.getElementById('search-results');
  if (!form || !input || !results) return;
  var announce = window.capsearch.announce;
  var toast = window.capsearch.toast;

  var REFRESH_MS = 500;
  var timer = null;
  var deferred = false;

  // ---- search ---------------------------------------------------------------------------------

  function searching() {
    return input.value !== '' && results.querySelector('.search-panel') !== null;
  }

  function rerun() {
    timer = null;
    if (!searching()) return;
    if (results.querySelector('.card-editing')) { deferred = true; return; }
    htmx.trigger(input, 'search');
  }

  function scheduleRerun() {
    // A throttle, not a debounce: a steady stream of updates still refreshes the results.
    if (timer === null && searching()) timer = window.setTimeout(rerun, REFRESH_MS);
  }

  document.addEventListener('capsearch:images-changed', scheduleRerun);

  // "Clear search" in the results: the same as emptying the box (the answer brings the collection back).
  results.addEventListener('click', function (e) {
    if (!e.target.closest('[data-action="clear-search"]')) return;
    input.value = '';
    htmx.trigger(input, 'search');
    input.focus();
  });

  // Chromium fires `search` on Enter itself; elsewhere the form's submit stands in for it.
  form.addEventListener('submit', function (e) {
    e.preventDefault();
    if (!('onsearch' in input)) htmx.trigger(input, 'search');
  });

  document.addEventListener('keydown', function (e) {
    if (e.key !== '/' || e.ctrlKey || e.metaKey || e.altKey) return;
    var t = e.target;
    if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
    e.preventDefault();
    input.focus();
    input.select();
  });

  // ---- caption edits --------------------------------------------------------------------------

  function field(card) {
    return card.querySelector('.caption-input');
  }

  function openEditor(card) {
    var f = card.querySelector('.caption-form');
    if (!f) return;
    card.classList.add('card-editing');
    f.hidden = false;
    field(card).focus();
    field(card).select();
  }

  function closeEditor(card) {
    var f = card.querySelector('.caption-form');
    if (!f) return;
    var input = field(card);
    input.value = input.getAttribute('data-original') || '';
    input.removeAttribute('aria-invalid');
    input.removeAttribute('aria-describedby');
    var error = f.querySelector('.field-error');
    if (error) error.remove();
    f.hidden = true;
    card.classList.remove('card-editing');
    var edit = card.querySelector('[data-action="edit-caption"]');
    if (edit) edit.focus();
    if (deferred) { deferred = false; scheduleRerun(); }
  }

  document.addEventListener('click', function (e) {
    var button = e.target.closest('[data-action="edit-caption"], [data-action="cancel-edit"]');
    if (!button) return;
    var card = button.closest('.card');
    if (button.getAttribute('data-action') === 'edit-caption') openEditor(card);
    else closeEditor(card);
  });

  document.addEventListener('keydown', function (e) {
    if (e.key !== 'Escape' || !e.target.closest) return;
    var card = e.target.closest('.card-editing');
    if (!card) return;
    e.preventDefault();
    closeEditor(card);
  });

  // Answers htmx does not swap (a server error, a lost connection) still deserve a word: the
  // server's own sentence when it sent the API's JSON error ({"detail", "code"}), else a general one.
  document.addEventListener('htmx:responseError', function (e) {
    var detail = null;
    try {
      detail = JSON.parse(e.detail.xhr.responseText).detail;
    } catch {
      // Not JSON: a proxy's page, or nothing at all. The general sentence stands in.
    }
    toast(typeof detail === 'string' && detail
      ? detail
      : 'That did not work: the server answered with an error. Try again in a moment.');
  });
  document.addEventListener('htmx:sendError', function () {
    toast('The server could not be reached. Check the connection and try again.');
  });

  // ---- deletes --------------------------------------------------------------------------------

  // The button that was focused goes away with its card: focus moves to the card beside it.
  var neighbour = null;

  document.addEventListener('htmx:beforeRequest', function (e) {
    if (e.detail.requestConfig.verb !== 'delete') return;
    var card = e.detail.elt.closest('.card');
    var next = card && (card.nextElementSibling || card.previousElementSibling);
    neighbour = next ? next.querySelector('[hx-delete]') : null;
    if (card) card.classList.add('card-deleting');
  });

  document.addEventListener('htmx:afterRequest', function (e) {
    if (e.detail.requestConfig.verb !== 'delete') return;
    var card = e.detail.elt.closest('.card');
    if (card) card.classList.remove('card-deleting'); // still here: the delete failed
    if (!e.detail.successful || document.body.contains(e.detail.elt)) return;
    announce('Image deleted.');
    if (neighbour && document.body.contains(neighbour)) neighbour.focus();
    else input.focus();
    neighbour = null;
  });

  document.addEventListener('htmx:afterSwap', function (e) {
    var el = e.target;
    if (el === results) {
      // Live voice hits change as the person speaks; the transcript's settled words are read instead.
      if (results.getAttribute('data-live') === 'true') return;
      var panel = results.querySelector('.search-panel');
      announce(panel ? panel.getAttribute('data-summary') : 'Search cleared: showing the collection.');
      return;
    }
    // A card the caption form just replaced: back to its Edit button, or into the field if refused.
    if (!el.classList || !el.classList.contains('card') || !/\/caption$/.test(e.detail.pathInfo.requestPath)) return;
    if (el.classList.contains('card-editing')) {
      field(el).focus();
      return;
    }
    var edit = el.querySelector('[data-action="edit-caption"]');
    if (edit) edit.focus();
    announce('Caption saved: ' + (el.querySelector('.caption') || el).textContent.trim());
    if (deferred) { deferred = false; scheduleRerun(); }
  });
})();
