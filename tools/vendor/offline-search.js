// gynlab: site search that also works when a page is opened from file://, where Chromium refuses fetch().
// Written for this project (tools/docs.py copies it to site_libs/ and adds it to every page).
// The site's search (smalldocs or Quarto) fetches search.json. This script answers that one request from
// window.gynlabSearchIndex, which site_libs/search-index.js defines and which is loaded (as a <script>, allowed on
// file://) the first time the index is wanted. Any other request, or a failure to load the script over http(s),
// goes to the browser's own fetch.
(() => {
  "use strict";
  if (window.gynlabOfflineSearch) return;
  window.gynlabOfflineSearch = true;
  const me = document.currentScript && document.currentScript.src;
  const indexUrl = me ? new URL("search-index.js", me).href : null;
  const realFetch = window.fetch ? window.fetch.bind(window) : null;
  let loading = null;

  const loadIndex = () => {
    if (window.gynlabSearchIndex) return Promise.resolve(window.gynlabSearchIndex);
    if (!indexUrl) return Promise.reject(new Error("offline-search: where is search-index.js?"));
    if (!loading) {
      loading = new Promise((resolve, reject) => {
        const s = document.createElement("script");
        s.src = indexUrl;
        s.onload = () => (window.gynlabSearchIndex ? resolve(window.gynlabSearchIndex)
          : reject(new Error("offline-search: search-index.js defined no index")));
        s.onerror = () => { loading = null; reject(new Error("offline-search: search-index.js did not load")); };
        document.head.appendChild(s);
      });
    }
    return loading;
  };
  window.gynlabLoadSearchIndex = loadIndex;

  const isIndex = (url) => /(^|\/)search\.json([?#].*)?$/.test(url);
  window.fetch = function (input, init) {
    const url = typeof input === "string" ? input : (input && input.url) || String(input);
    if (isIndex(url)) {
      return loadIndex().then(
        (index) => new Response(JSON.stringify(index), { status: 200, headers: { "Content-Type": "application/json" } }),
        (err) => {
          if (realFetch && location.protocol !== "file:") return realFetch(input, init);
          throw err;
        });
    }
    if (!realFetch) return Promise.reject(new TypeError("fetch is not available"));
    return realFetch(input, init);
  };
})();
