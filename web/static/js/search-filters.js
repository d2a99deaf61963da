/*
 * capsearch search filters: the sort select and the upload-date range beside the results
 * (#search-filters, index.html). The search box sends them with every search itself (hx-include) and
 * the server puts them in the address bar (HX-Replace-Url), so a reload, a shared link or coming back
 * to the page shows the same search; this script only does what markup cannot:
 *
 * - a changed control searches again at once (when there is a search to change), and "Clear filters"
 *   (beside the controls, or in a panel that found nothing in the dates) puts them back;
 * - fills in the browser's time zone: the date inputs hold the person's own days, which the server
 *   reads in that zone;
 * - gives voice search the same options (voice.start carries them) and the same address.
 *
 * Needs: #search-filters, #search-input (index.html, base.html); htmx. Loaded before the voice-*.js
 * scripts; puts `searchFilters` on window.capsearch:
 *
 *   searchFilters.options()   {sort, uploaded_from, uploaded_to, tz}, as voice.start takes them
 *   searchFilters.url(q)      the page's address for a search of q with these filters
 */
(function () {
  'use strict';

  var form = document.getElementById('search-filters');
  var input = document.getElementById('search-input');
  if (!form || !input) return;
  var sort = form.elements.namedItem('sort');
  var from = form.elements.namedItem('from');
  var to = form.elements.namedItem('to');
  var tz = form.elements.namedItem('tz');
  var clear = form.querySelector('[data-action="clear-filters"]');

  try {
    tz.value = Intl.DateTimeFormat().resolvedOptions().timeZone || tz.value;
  } catch {
    // No Intl time zones: the server reads the dates as UTC days, which is what an empty tz means.
  }

  function active() {
    return sort.value !== 'relevance' || from.value !== '' || to.value !== '';
  }

  function apply() {
    clear.hidden = !active();
    // Without a search there is nothing to re-order; the controls wait for the next one.
    if (input.value.trim() !== '') htmx.trigger(input, 'search');
  }

  form.addEventListener('change', apply);
  // Enter in a date field would navigate to /?sort=...; it means "search with these" instead.
  form.addEventListener('submit', function (e) {
    e.preventDefault();
    apply();
  });

  document.addEventListener('click', function (e) {
    if (!e.target.closest('[data-action="clear-filters"]')) return;
    sort.value = 'relevance';
    from.value = '';
    to.value = '';
    apply();
    sort.focus(); // the button that was pressed is hidden now, or replaced with its panel
  });

  function options() {
    return { sort: sort.value, uploaded_from: from.value, uploaded_to: to.value, tz: tz.value };
  }

  // The same address the server's HX-Replace-Url gives a typed search (PageFilters.url).
  function url(q) {
    var p = new URLSearchParams({ q: q });
    if (sort.value !== 'relevance') p.set('sort', sort.value);
    if (from.value) p.set('from', from.value);
    if (to.value) p.set('to', to.value);
    if ((from.value || to.value) && tz.value) p.set('tz', tz.value);
    return '/?' + p.toString();
  }

  window.capsearch.searchFilters = { options: options, url: url };
})();
