/*
 * capsearch voice search, the hits: `voice.hits` messages (docs/protocol.md, "Voice") shown in
 * #search-results. The server already searched and rendered the results panel
 * (partials/search_results.html, the same template as a typed search), so the page swaps it in as it is
 * and never searches again. Live hits (`partial: true`, for the words that have settled while the
 * person still speaks) are marked provisional: #search-results gets data-live="true" and aria-busy, and
 * the panel's title a "listening…" badge. The final hits replace them, fill the search box and set the
 * address a reload or a shared link lands on.
 *
 * Needs: #search-input, #search-results (index.html); htmx; capsearch.searchFilters (search-filters.js,
 * for the address: the filters stay in it). Loaded before voice.js, after voice-audio.js (which
 * creates `window.capsearch.voice`); puts `results` on capsearch.voice:
 *
 *   results.live(msg)      swap in live hits (msg: a voice.hits with partial: true)
 *   results.final(msg)     swap in the final hits, in place of any live ones
 *   results.dropLive()     the recording failed or was cancelled: live hits leave with it
 */
(function () {
  'use strict';

  var input = document.getElementById('search-input');
  var results = document.getElementById('search-results');
  if (!input || !results || !window.capsearch.voice) return;

  function setLive(live) {
    // Set before the swap: search.js reads it when the swap is announced, and stays quiet for live
    // hits (the settled words themselves are being read out from the transcript).
    if (live) {
      results.setAttribute('data-live', 'true');
      results.setAttribute('aria-busy', 'true');
    } else {
      results.removeAttribute('data-live');
      results.removeAttribute('aria-busy');
    }
  }

  function live(msg) {
    setLive(true);
    htmx.swap(results, msg.html, { swapStyle: 'innerHTML' });
    var title = results.querySelector('.search-panel h2');
    if (!title) return;
    var badge = document.createElement('span');
    badge.className = 'voice-live-badge';
    badge.title = 'These results follow your words as you speak; they may still change.';
    badge.textContent = 'listening…';
    title.appendChild(badge);
  }

  function final(msg) {
    setLive(false);
    input.value = msg.query;
    htmx.swap(results, msg.html, { swapStyle: 'innerHTML' });
    var filters = window.capsearch.searchFilters;
    window.history.replaceState(null, '', filters
      ? filters.url(msg.query)
      : '/?' + new URLSearchParams({ q: msg.query }).toString());
  }

  function dropLive() {
    if (results.getAttribute('data-live') !== 'true') return;
    setLive(false);
    // Provisional hits of a recording that never finished answer nothing the person asked for.
    results.textContent = '';
  }

  window.capsearch.voice.results = { live: live, final: final, dropLive: dropLive };
})();
