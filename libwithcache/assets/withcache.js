// withcache's own script; served from /static so the UI needs no inline script (CSP: script-src 'self').
// The SHA-256 "Copy" buttons: the async clipboard where the page is a secure context (https or
// localhost), else a selection copy, which also works over plain http on a LAN name.
(function () {
  'use strict';

  function selectionCopy(text) {
    var area = document.createElement('textarea');
    area.value = text;
    area.setAttribute('readonly', '');
    area.className = 'copy-source';
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try {
      ok = document.execCommand('copy');
    } catch (e) {
      ok = false;
    }
    document.body.removeChild(area);
    return ok;
  }

  function copy(button) {
    var text = button.getAttribute('data-copy');
    var done = function () {
      button.classList.add('copied');
      button.textContent = 'Copied';
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () {
        if (selectionCopy(text)) done();
      });
    } else if (selectionCopy(text)) {
      done();
    }
  }

  document.addEventListener('click', function (event) {
    var button = event.target.closest ? event.target.closest('button[data-copy]') : null;
    if (button) {
      event.preventDefault();
      copy(button);
    }
  });
  // A 414 (an origin URL over 8 KiB) carries the Add form with its reason: show it, as HTMX shows the
  // 200 of any other refusal (by default it swaps nothing of a 4xx).
  document.addEventListener('htmx:beforeSwap', function (event) {
    if (event.detail && event.detail.xhr && event.detail.xhr.status === 414) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });
})();
