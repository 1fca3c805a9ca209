// Served at {portal}/static/portal.js on every page.
'use strict';
// Copy buttons: each names the <pre> it copies.
document.addEventListener('click', (event) => {
  const button = event.target.closest('button.copy');
  if (!button) return;
  const code = document.getElementById(button.dataset.target);
  if (code && navigator.clipboard) {
    navigator.clipboard.writeText(code.textContent).then(() => {
      button.textContent = 'Copied';
      setTimeout(() => { button.textContent = 'Copy'; }, 1500);
    });
  }
});
